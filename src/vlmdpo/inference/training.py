"""load_for_training(name, ...) -> ModelBundle: the policy to train, its processor, its family adapter.

Every setting is an explicit keyword without a default: the defaults live once, in TrainConfig.
The weights come as for inference (a folder, a hub id, a tiny / builtin name); QLoRA loads them
4-bit; `vlmdpo.model.prepare` then turns dropout off and applies checkpointing, LoRA or freezing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmdpo.errors import ModelLoadError
from vlmdpo.inference.load import DTYPES, from_pretrained
from vlmdpo.inference.names import build_named, is_named
from vlmdpo.model.families import FamilyAdapter, adapter_for
from vlmdpo.model.prepare import prepare_for_training


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


def load_for_training(name: str, *, finetuning_type: str, dtype: str, attn_implementation: str | None,
                      trust_remote_code: bool, lora_rank: int, lora_alpha: int, lora_dropout: float, lora_target,
                      lora_modules: str, freeze_vision_tower: bool, freeze_projector: bool,
                      freeze_language_model: bool, gradient_checkpointing: bool, seed: int) -> ModelBundle:
    """The policy as TrainConfig's fields of the same names describe it, on the CPU in train-ready form."""
    if not name:
        raise ModelLoadError("model_name_or_path is not set", "set it to a Hub id, a local folder, or tiny:<family>")
    ft = finetuning_type
    if ft not in ("lora", "qlora", "full"):  # callers without a TrainConfig get the same one-line error
        raise ModelLoadError(f"finetuning_type {ft!r} is not one of lora, qlora, full", "pick one of them")
    if is_named(name):
        if ft == "qlora":
            raise ModelLoadError(f"{name} is built in memory and cannot be loaded quantized",
                                 "use finetuning_type: lora, or a pretrained checkpoint for qlora")
        model, processor = build_named(name, dtype=_torch_dtype(dtype, torch.float32),
                                       attn_implementation=attn_implementation)
    else:
        model, processor = _load_pretrained(name, ft, dtype=dtype, attn_implementation=attn_implementation,
                                            trust_remote_code=trust_remote_code,
                                            gradient_checkpointing=gradient_checkpointing)

    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer.pad_token_id is None:  # pad rows with EOS: padded positions are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    family = adapter_for(model)
    model = prepare_for_training(
        model, family, finetuning_type=ft, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        lora_target=lora_target, lora_modules=lora_modules, freeze_vision_tower=freeze_vision_tower,
        freeze_projector=freeze_projector, freeze_language_model=freeze_language_model,
        gradient_checkpointing=gradient_checkpointing, seed=seed)
    return ModelBundle(model=model, processor=processor, family=family, is_vlm=family.is_vlm, tokenizer=tokenizer,
                       pad_token_id=int(tokenizer.pad_token_id), finetuning_type=ft, name=name)


def _torch_dtype(value: str, default):
    if value == "auto":
        return default
    if value not in DTYPES:
        raise ModelLoadError(f"dtype {value!r} is not one of auto, float32, bfloat16, float16", "pick one of them")
    return DTYPES[value]


def _load_pretrained(name: str, ft: str, *, dtype: str, attn_implementation: str | None, trust_remote_code: bool,
                     gradient_checkpointing: bool):
    """A local folder or hub id; VLM when the config has a vision part (as the family adapters decide)."""
    import transformers as T

    trust = bool(trust_remote_code)
    if name.startswith(("/", "./", "../", "~")):
        if not Path(name).expanduser().is_dir():
            raise ModelLoadError(f"model folder {name!r} does not exist", "check model_name_or_path")
        name = str(Path(name).expanduser())
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype, "auto")}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if ft == "qlora":
        kwargs["quantization_config"] = _bnb_config()
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    with _load_errors(name, trust):
        config = T.AutoConfig.from_pretrained(name, trust_remote_code=trust)
        is_vlm = getattr(config, "vision_config", None) is not None
        model, processor = from_pretrained(name, is_vlm=is_vlm, trust_remote_code=trust, **kwargs)
    if ft == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
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


def _bnb_config():
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
