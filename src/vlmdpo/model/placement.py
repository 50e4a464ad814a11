"""Batch tensors onto the model: the plain and the fast path both place their inputs with this."""
from __future__ import annotations

from typing import Any

import torch


def model_device(model) -> torch.device:
    """Where the model's parameters are (through DDP / PEFT wrappers, which list them too)."""
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


def to_model(inputs: dict[str, Any], device: torch.device, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Tensors on the model's device; floating ones (pixel values) in the model's dtype (bf16 towers)."""
    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, dtype=dtype if (dtype is not None and v.is_floating_point()) else None)
        out[k] = v
    return out
