"""LLaMA-Factory and TRL DPOConfig keys -> ours: the tables (data), read by `translate` and docs/CONFIG.md.

A key TrainConfig has is always ours and passes through (a table entry then only documents it, or
converts a value whose spelling differs, e.g. LLaMA-Factory's `lora_target: all`). A key of theirs
that asks for something we do not do is refused with what to use instead; one that does not apply
here is named in one warning.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

# their pref_loss -> our loss_type (LLaMA-Factory's `sigmoid` is DPO)
PREF_LOSS = {"sigmoid": "sigmoid", "hinge": "hinge", "ipo": "ipo", "orpo": "orpo", "simpo": "simpo"}
# LLaMA-Factory `template` -> the model families it fits (vlmdpo always uses the model's own chat template)
TEMPLATE_FAMILIES = {
    "qwen2_vl": ("qwen2_vl", "qwen2_5_vl"), "qwen3_vl": ("qwen3_vl",), "qwen3_vl_nothink": ("qwen3_vl",),
    "llava": ("llava",), "llava_next": ("llava_next",), "llava_next_mistral": ("llava_next",),
    "llava_next_llama3": ("llava_next",), "llava_next_qwen": ("llava_next",), "gemma3": ("gemma3",),
    "smolvlm": ("idefics3",), "idefics3": ("idefics3",),
}


class DialectError(ValueError):
    """A key of theirs we cannot honour; the message names the key and what to use instead."""


@dataclass(frozen=True)
class Alias:
    """Their key -> ours; `meaning` is the difference in meaning (empty: the same)."""

    ours: str
    meaning: str = ""
    convert: Callable[[Any], Any] | None = None


def _comma_list(value: Any) -> Any:
    """LLaMA-Factory writes lists as "a,b"; one name stays a string."""
    if isinstance(value, str) and "," in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _lora_target(value: Any) -> Any:
    value = _comma_list(value)
    return "all-linear" if value == "all" else value


def _pref_loss(value: Any) -> Any:
    if value in PREF_LOSS:
        return PREF_LOSS[value]
    raise DialectError(f"pref_loss: {value!r} is not available here; use one of {', '.join(PREF_LOSS)} "
                       "(or any loss_type in docs/CONFIG.md)")


def _pref_ftx(value: Any) -> Any:
    return None if value in (0, 0.0, None) else value  # 0 is LLaMA-Factory's "no SFT term"


def _finetuning_type(value: Any) -> Any:
    if value == "freeze":
        raise DialectError("finetuning_type: freeze is not available here; use finetuning_type: full with "
                           "freeze_vision_tower / freeze_projector / freeze_language_model")
    return value


def _use_peft(value: Any) -> Any:
    return "lora" if value else "full"  # TRL trains all weights without use_peft


def _stage(value: Any) -> None:
    """only dpo; sft, kto, ppo, rm, pt are refused (use LLaMA-Factory for those stages)"""
    if value != "dpo":
        raise DialectError(f"stage: {value} is not trained here; vlmdpo trains preference pairs (DPO family, "
                           "stage: dpo); use LLaMA-Factory for that stage")


def _do_train(value: Any) -> None:
    """true is ignored; false is refused"""
    if value is False:
        raise DialectError("do_train: false asks for no training; remove it (`vlmdpo eval` evaluates a model)")


def _optim(value: Any) -> None:
    """adamw_* is ignored (vlmdpo uses AdamW); other optimizers are refused"""
    if not str(value).startswith("adamw"):
        raise DialectError(f"optim: {value} is not available here; vlmdpo uses AdamW (remove optim)")


def _quantization_bit(value: Any) -> None:
    """4 makes finetuning_type qlora; other widths are refused"""
    if value not in (None, 4):
        raise DialectError(f"quantization_bit: {value} is not available here; use quantization_bit: 4 "
                           "(finetuning_type: qlora) or remove it")


def _refuse(key: str, fix: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value not in (None, False, "", []):
            raise DialectError(f"{key}: is not available here; {fix}")
    check.__doc__ = f"refused: {fix}"
    return check


def _split(value: Any) -> None:
    """train is ignored; another split is refused (save it to a file)"""
    if value not in (None, "train"):
        raise DialectError(f"dataset_train_split: {value} is not available here; save that split to a file "
                           "(Dataset.to_json) and give it as dataset")


# Keys H9/H10 make ours: listed under their own name, so they pass through once TrainConfig has them.
SAME_NAME_TRL = ("eval_strategy", "save_strategy", "load_best_model_at_end", "metric_for_best_model",
                 "max_prompt_length", "max_completion_length", "dataset_num_proc", "push_to_hub", "hub_model_id",
                 "overwrite_output_dir")

LLAMAFACTORY: dict[str, Alias] = {
    "model_name_or_path": Alias("model_name_or_path"),
    "dataset": Alias("dataset", "a name in dataset_dir/dataset_info.json, a file or folder; \"a,b\" is a list",
                     _comma_list),
    "eval_dataset": Alias("eval_dataset", "as dataset", _comma_list),
    "dataset_dir": Alias("dataset_dir"),
    "media_dir": Alias("image_root", "unset: dataset_dir for a dataset named in dataset_info.json (as "
                                     "LLaMA-Factory), else the data file's folder"),
    "val_size": Alias("val_size"),
    "cutoff_len": Alias("max_length", "over it, completions are cut (never image tokens) or the pair dropped"),
    "preprocessing_num_workers": Alias("dataset_num_proc"),
    "finetuning_type": Alias("finetuning_type", "freeze -> full with freeze_* keys", _finetuning_type),
    "quantization_bit": Alias("finetuning_type", "4 -> qlora; other widths are refused", None),
    "lora_rank": Alias("lora_rank"),
    "lora_alpha": Alias("lora_alpha", "unset in a file with `stage`: 2 x lora_rank, as LLaMA-Factory"),
    "lora_dropout": Alias("lora_dropout"),
    "lora_target": Alias("lora_target", "all -> all-linear; \"q_proj,v_proj\" -> a list", _lora_target),
    "freeze_vision_tower": Alias("freeze_vision_tower"),
    "freeze_multi_modal_projector": Alias("freeze_projector"),
    "freeze_language_model": Alias("freeze_language_model"),
    "image_max_pixels": Alias("image_max_pixels"),
    "image_min_pixels": Alias("image_min_pixels"),
    "video_fps": Alias("video_fps"),
    "video_maxlen": Alias("video_max_frames"),
    "video_max_pixels": Alias("video_max_pixels"),
    "pref_beta": Alias("beta"),
    "pref_loss": Alias("loss_type", "sigmoid (DPO), hinge, ipo, orpo, simpo; kto_pair is refused", _pref_loss),
    "pref_ftx": Alias("rpo_alpha", "the SFT (chosen NLL) coefficient; 0 -> null", _pref_ftx),
    "dpo_label_smoothing": Alias("label_smoothing"),
    "simpo_gamma": Alias("simpo_gamma"),
    "flash_attn": Alias("attn_implementation", "fa2 -> flash_attention_2, sdpa, disabled -> eager; auto -> null",
                        lambda v: {"fa2": "flash_attention_2", "disabled": "eager", "auto": None}.get(v, v)),
    "template": Alias("template", "checked against the model's family; the model's own chat template is used"),
    "output_dir": Alias("output_dir"),
}

TRL: dict[str, Alias] = {
    "model_name_or_path": Alias("model_name_or_path"),
    "dataset_name": Alias("dataset", "also a file or folder"),
    "use_peft": Alias("finetuning_type", "true -> lora, false -> full", _use_peft),
    "load_in_4bit": Alias("finetuning_type", "true -> qlora", None),
    "lora_r": Alias("lora_rank"),
    "lora_alpha": Alias("lora_alpha"),
    "lora_dropout": Alias("lora_dropout"),
    "lora_target_modules": Alias("lora_target"),
    "target_modules": Alias("lora_target", "peft LoraConfig's name"),
    "torch_dtype": Alias("dtype"),
    "dtype": Alias("dtype"),
    "beta": Alias("beta"),
    "loss_type": Alias("loss_type"),
    "max_length": Alias("max_length", "prompt + completion; over it, completions are cut (never image tokens)"),
    "rpo_alpha": Alias("rpo_alpha"),
    "ld_alpha": Alias("ld_alpha"),
    "precompute_ref_log_probs": Alias("precompute_ref_log_probs"),
    "padding_free": Alias("padding_free"),
    **{key: Alias(key) for key in SAME_NAME_TRL},
}

# Keys of theirs that do not apply here; named together in one warning.
IGNORED = frozenset({
    "do_eval", "do_predict", "plot_loss", "ddp_timeout", "overwrite_cache", "logging_dir", "save_only_model",
    "save_safetensors", "tf32", "logging_strategy", "logging_first_step", "run_name", "remove_unused_columns",
    "padding_value", "label_pad_token_id", "model_init_kwargs", "ref_model_init_kwargs", "generate_during_eval",
    "use_logits_to_keep", "gradient_checkpointing_kwargs", "lora_task_type", "dataset_test_split",
    "dataloader_pin_memory", "dataloader_persistent_workers", "disable_tqdm", "use_fast_tokenizer",
    "tokenized_path", "streaming", "mix_strategy", "packing", "upcast_layernorm", "bnb_4bit_quant_type",
    "use_bnb_nested_quant", "bnb_4bit_compute_dtype", "model_revision", "hub_strategy", "hub_private_repo",
    "trust_remote_code_for_data", "ddp_backend",
})

# Keys whose value decides: consumed quietly, or refused with what to do instead.
CHECKED: dict[str, Callable[[Any], None]] = {
    "stage": _stage,
    "do_train": _do_train,
    "optim": _optim,
    "quantization_bit": _quantization_bit,
    "dataset_train_split": _split,
    "deepspeed": _refuse("deepspeed", "launch with `accelerate launch --config_file <deepspeed accelerate config>`"),
    "fsdp": _refuse("fsdp", "launch with `accelerate launch --config_file <fsdp accelerate config>`"),
    "sync_ref_model": _refuse("sync_ref_model", "the reference stays the initial model; remove it"),
    "use_dora": _refuse("use_dora", "use plain LoRA (remove use_dora)"),
    "use_rslora": _refuse("use_rslora", "use plain LoRA (remove use_rslora)"),
    "pissa_init": _refuse("pissa_init", "use plain LoRA (remove pissa_init)"),
    "adapter_name_or_path": _refuse("adapter_name_or_path",
                                    "merge the adapter first (`vlmdpo export --merge`) and train from that folder"),
}

# Unknown keys that resemble ours but mean something else: the hint replaces "did you mean".
HINTS = {
    "batch_size": "use per_device_train_batch_size (pairs per device per micro-batch) and "
                  "gradient_accumulation_steps",
    "train_batch_size": "use per_device_train_batch_size and gradient_accumulation_steps",
    "eval_batch_size": "use per_device_eval_batch_size",
    "lr": "use learning_rate",
    "epochs": "use num_train_epochs",
    "vit_lr": "use vision_tower_lr (ms-swift's vit_lr)",
    "aligner_lr": "use projector_lr (ms-swift's aligner_lr)",
}

DIALECTS: dict[str, dict[str, Alias]] = {"LLaMA-Factory": LLAMAFACTORY, "TRL": TRL}


def aliases() -> dict[str, Alias]:
    """Every dialect key -> its alias (the tables agree where both name a key)."""
    return {**TRL, **LLAMAFACTORY}


@dataclass
class Translation:
    values: dict[str, Any]
    renamed: list[str] = field(default_factory=list)  # "pref_beta -> beta"
    ignored: list[str] = field(default_factory=list)


def translate(values: Mapping[str, Any], ours: Mapping[str, Any]) -> Translation:
    """Their keys in `values` -> ours (`ours`: TrainConfig's fields). Unknown keys pass through for the
    caller's "did you mean"; a refused key or value raises DialectError; two keys for one setting too."""
    table = aliases()
    out = Translation({})
    origin: dict[str, str] = {}
    for key, value in values.items():
        if key in CHECKED and key not in ours:
            CHECKED[key](value)
            if key not in table:
                if key != "stage":  # stage: dpo is what we do; the rest asked for nothing we lack
                    out.ignored.append(key)
                continue
        alias = table.get(key)
        if alias is None or (key in ours and alias.convert is None):
            if key in IGNORED and key not in ours:
                out.ignored.append(key)
            else:
                _put(out, origin, key, key, value)
            continue
        value = alias.convert(value) if alias.convert else value
        if alias.ours not in ours:  # a key another part of vlmdpo has not made ours (yet)
            out.ignored.append(key)
            continue
        if key in ("quantization_bit", "load_in_4bit"):
            if value in (4, True):
                _put(out, origin, key, "finetuning_type", "qlora")
                out.renamed.append(f"{key} -> finetuning_type: qlora")
            continue
        _put(out, origin, key, alias.ours, value)
        if key != alias.ours:
            out.renamed.append(f"{key} -> {alias.ours}")
    rank = out.values.get("lora_rank")
    if "stage" in values and "lora_alpha" not in out.values and isinstance(rank, int):
        out.values["lora_alpha"] = 2 * rank  # LLaMA-Factory's default; ours would be 32 whatever the rank
        out.renamed.append(f"lora_alpha: {2 * rank} (2 x lora_rank, LLaMA-Factory's default)")
    return out


def _put(out: Translation, origin: dict[str, str], key: str, ours: str, value: Any) -> None:
    if ours in out.values and origin[ours] != key:
        if ours == "finetuning_type" and "qlora" in (value, out.values[ours]):  # lora + 4-bit -> qlora
            out.values[ours] = "qlora"
            return
        raise DialectError(f"{origin[ours]} / {key}: both set {ours}; keep one")
    out.values[ours] = value
    origin[ours] = key


def template_problem(template: str, family: str, model: str) -> str | None:
    """Why `template` does not fit a model of `family`, or None when it does."""
    if template not in TEMPLATE_FAMILIES:
        return (f"template: {template!r} is not a vision-language template vlmdpo knows "
                f"({', '.join(TEMPLATE_FAMILIES)}); remove it (the model's own chat template is used)")
    fits = TEMPLATE_FAMILIES[template]
    if family in fits:
        return None
    want = next((t for t, fams in TEMPLATE_FAMILIES.items() if family in fams), None)
    fix = f"set template: {want}" if want else "remove template"
    return f"template: {template} is for {'/'.join(fits)} models, but {model} is {family}; {fix}"
