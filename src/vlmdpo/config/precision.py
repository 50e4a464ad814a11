"""Mixed precision the device can do: `bf16` / `fp16` (and `bf16: auto`) -> accelerate's mixed_precision."""
from __future__ import annotations

from vlmdpo.config.load import ConfigError


def mixed_precision(bf16: bool | str, fp16: bool, *, cuda: bool | None = None, cuda_bf16: bool | None = None) -> str:
    """"bf16", "fp16" or "no" for this device; a ConfigError that says what to set when it cannot.

    `cuda` / `cuda_bf16` stand in for the device (tests); None asks torch.
    """
    import torch

    if cuda is None:
        cuda = torch.cuda.is_available()
    if cuda_bf16 is None:
        cuda_bf16 = bool(cuda) and torch.cuda.is_bf16_supported()
    if bf16 == "auto":
        return "bf16" if cuda_bf16 else "no"
    if bf16 and not cuda_bf16:
        where = "this GPU has no bfloat16 support" if cuda else "no CUDA GPU is available (CPU training runs in float32)"
        raise ConfigError(f"bf16: true but {where}; set bf16: auto (bf16 where supported, else float32) "
                          f"or bf16: false{'' if not cuda else ' / fp16: true'}")
    if fp16 and not cuda:
        raise ConfigError("fp16: true but no CUDA GPU is available (float16 mixed precision needs one); "
                          "set fp16: false, or bf16: auto")
    return "bf16" if bf16 else "fp16" if fp16 else "no"
