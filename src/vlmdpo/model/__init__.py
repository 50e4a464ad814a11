"""Models: family adapters, training preparation (LoRA / full), reference, log-probs, tiny models.

Names are imported lazily so `import vlmdpo.model` stays cheap (no torch / transformers).
"""
from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "FamilyAdapter": "families", "adapter_for": "families", "FAMILY_NAMES": "families",
    "Reference": "reference", "make_reference": "reference",
    "batch_logps": "logps",
    "build_tiny": "tiny", "FAMILIES": "tiny",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"vlmdpo.model.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vlmdpo.model' has no attribute {name!r}")
