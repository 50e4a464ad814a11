"""load_model(cfg) -> ModelBundle: the policy, its processor, its family adapter.

Reads these config attributes (any object with them works; missing ones take the defaults
below): model_name_or_path, dtype, attn_implementation, trust_remote_code, finetuning_type,
lora_rank, lora_alpha, lora_dropout, lora_target, lora_modules, freeze_vision_tower,
freeze_projector, freeze_language_model, gradient_checkpointing, seed.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmdpo.model.families import FamilyAdapter, adapter_for
from vlmdpo.model.parts import apply_freezing, lora_plan
from vlmdpo.errors import FixableError

_DEFAULTS: dict[str, Any] = dict(
    dtype="auto", attn_implementation=None, trust_remote_code=False, finetuning_type="lora", lora_rank=16,
    lora_alpha=32, lora_dropout=0.05, lora_target="all-linear", lora_modules="language_model",
    freeze_vision_tower=True, freeze_projector=False, freeze_language_model=False, gradient_checkpointing=False,
    seed=42,
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(FixableError):
    """A model that cannot be loaded or prepared as configured."""


@dataclass
class ModelBundle:
    model: Any  # the policy; a peft.PeftModel for lora / qlora
    processor: Any  # a ProcessorMixin for VLMs, the tokenizer for text-only models
    family: FamilyAdapter  # bound to this model's image / video token ids
    is_vlm: bool
    tokenizer: Any
    pad_token_id: int
    finetuning_type: str
    name: str

    @property
    def is_peft(self) -> bool:
        return self.finetuning_type in ("lora", "qlora")


def _opt(cfg, key: str):
    return getattr(cfg, key, _DEFAULTS[key])


def load_model(cfg) -> ModelBundle:
    name = getattr(cfg, "model_name_or_path", None)
    if not name:
        raise ModelLoadError("model_name_or_path is not set", "set it to a Hub id, a local folder, or tiny:<family>")
    ft = _opt(cfg, "finetuning_type")
    if ft not in ("lora", "qlora", "full"):
        raise ModelLoadError(f"finetuning_type {ft!r} is not one of lora, qlora, full", "pick one of them")
    model, processor = _load_base(cfg, name, ft)

    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer.pad_token_id is None:  # pad rows with EOS: padded positions are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    family = adapter_for(model)
    _disable_dropout(model)  # dropout would make policy and reference differ on identical weights

    if _opt(cfg, "gradient_checkpointing"):
        enable_checkpointing(model)
    if ft == "full":
        apply_freezing(model, family, vision=_opt(cfg, "freeze_vision_tower"), projector=_opt(cfg, "freeze_projector"),
                       language=_opt(cfg, "freeze_language_model"))
    else:
        model = _wrap_lora(model, family, cfg, ft)
    if not any(p.requires_grad for p in model.parameters()):
        raise ModelLoadError("every parameter is frozen: nothing would train",
                             "unfreeze something (freeze_language_model: false, or freeze_projector: false)")
    return ModelBundle(model=model, processor=processor, family=family, is_vlm=family.is_vlm, tokenizer=tokenizer,
                       pad_token_id=int(tokenizer.pad_token_id), finetuning_type=ft, name=name)


# ------------------------------------------------------------------------------ base model
def _dtype(cfg, default):
    value = _opt(cfg, "dtype")
    if value == "auto":
        return default
    if value not in _DTYPES:
        raise ModelLoadError(f"dtype {value!r} is not one of auto, float32, bfloat16, float16", "pick one of them")
    return _DTYPES[value]


def _load_base(cfg, name: str, ft: str):
    attn = _opt(cfg, "attn_implementation")
    if name.startswith(("tiny:", "builtin:")) and ft == "qlora":
        raise ModelLoadError(f"{name} is built in memory and cannot be loaded quantized",
                             "use finetuning_type: lora, or a pretrained checkpoint for qlora")
    if name.startswith("tiny:"):
        from vlmdpo.model.tiny import FAMILIES, build_tiny

        family = name.removeprefix("tiny:")
        if family not in FAMILIES:
            raise ModelLoadError(f"unknown tiny model {name!r}", f"use one of: tiny:{', tiny:'.join(FAMILIES)}")
        model, processor = build_tiny(family, dtype=_dtype(cfg, torch.float32), attn_implementation=attn or "eager")
        return model, processor
    if name.startswith("builtin:"):
        from vlmdpo.model import builtin

        if name.removeprefix("builtin:") != "nano-smolvlm":
            raise ModelLoadError(f"unknown built-in model {name!r}", "use builtin:nano-smolvlm")
        return builtin.build_nano_smolvlm(dtype=_dtype(cfg, torch.float32), attn_implementation=attn)
    return _load_pretrained(cfg, name, ft, attn)


def _load_pretrained(cfg, name: str, ft: str, attn):
    import transformers as T

    trust = bool(_opt(cfg, "trust_remote_code"))
    if name.startswith(("/", "./", "../", "~")):
        if not Path(name).expanduser().is_dir():
            raise ModelLoadError(f"model folder {name!r} does not exist", "check model_name_or_path")
        name = str(Path(name).expanduser())
    kwargs: dict[str, Any] = {"dtype": _dtype(cfg, "auto"), "trust_remote_code": trust}
    if attn:
        kwargs["attn_implementation"] = attn
    if ft == "qlora":
        kwargs["quantization_config"] = _bnb_config(cfg)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    with _load_errors(name, trust):
        config = T.AutoConfig.from_pretrained(name, trust_remote_code=trust)
        is_vlm = getattr(config, "vision_config", None) is not None
        if is_vlm:
            model = T.AutoModelForImageTextToText.from_pretrained(name, **kwargs)
            processor = T.AutoProcessor.from_pretrained(name, trust_remote_code=trust)
        else:
            model = T.AutoModelForCausalLM.from_pretrained(name, **kwargs)
            processor = T.AutoTokenizer.from_pretrained(name, trust_remote_code=trust)
    if ft == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=_opt(cfg, "gradient_checkpointing"),
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, processor


class _load_errors:
    """Turns transformers' loading exceptions into one clear line naming the model and the fix."""

    def __init__(self, name: str, trust: bool):
        self.name, self.trust = name, trust

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, ModelLoadError) or not isinstance(exc, Exception):
            return False
        text = str(exc)
        if "trust_remote_code" in text and not self.trust:
            raise ModelLoadError(f"model {self.name!r} needs its own Python code to load",
                                 "set trust_remote_code: true (only for repositories you trust)") from None
        if isinstance(exc, OSError):
            raise ModelLoadError(f"cannot load model {self.name!r}: not a local model folder, and not found on / "
                                 f"not reachable from the Hugging Face Hub ({text.splitlines()[0]})",
                                 "check the path or Hub id, and your network / HF_TOKEN") from None
        if isinstance(exc, (ValueError, KeyError)):
            raise ModelLoadError(f"cannot load model {self.name!r}: {text.splitlines()[0] if text else type(exc).__name__}",
                                 "check that transformers supports this model (upgrade it), or set "
                                 "trust_remote_code: true if the model ships custom code") from None
        return False


def _bnb_config(cfg):
    if not torch.cuda.is_available():
        raise ModelLoadError("finetuning_type qlora needs a CUDA GPU (4-bit bitsandbytes kernels)",
                             "use finetuning_type: lora on this machine")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelLoadError("finetuning_type qlora needs the bitsandbytes package",
                             "pip install 'vlmdpo[qlora]' (or pip install bitsandbytes)") from None
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


# ------------------------------------------------------------------------------ training setup
def enable_checkpointing(model) -> None:
    """Activation checkpointing, non-reentrant (works with frozen inputs and under no_grad)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def disable_checkpointing(model) -> None:
    if hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    elif hasattr(model, "gradient_checkpointing_disable"):
        model.gradient_checkpointing_disable()


def is_checkpointing(model) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def _disable_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _wrap_lora(model, family: FamilyAdapter, cfg, ft: str):
    from peft import LoraConfig, get_peft_model

    targets, to_save = lora_plan(model, family, target=_opt(cfg, "lora_target"), modules=_opt(cfg, "lora_modules"),
                                 vision=_opt(cfg, "freeze_vision_tower"), projector=_opt(cfg, "freeze_projector"),
                                 language=_opt(cfg, "freeze_language_model"))
    if not targets:
        raise ModelLoadError(f"lora_target {_opt(cfg, 'lora_target')!r} matches no linear layer in the trainable parts",
                             "use lora_target: all-linear, or names such as [q_proj, v_proj]")
    lora = LoraConfig(r=_opt(cfg, "lora_rank"), lora_alpha=_opt(cfg, "lora_alpha"),
                      lora_dropout=_opt(cfg, "lora_dropout"), target_modules=targets,
                      modules_to_save=to_save or None, task_type="CAUSAL_LM")
    if _opt(cfg, "gradient_checkpointing"):
        model.enable_input_require_grads()  # frozen embeddings + checkpointing would cut the graph
    with torch.random.fork_rng(devices=[]), quiet_peft_warnings():  # LoRA A init from the run's seed
        torch.manual_seed(int(_opt(cfg, "seed")))
        return get_peft_model(model, lora)


@contextlib.contextmanager
def quiet_peft_warnings():
    """peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`: noise for our users, not theirs to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
