"""vlmdpo: align vision-language models with human preferences (DPO and relatives).

The Python API mirrors the CLI: `vlmdpo.load_preferences(...)`, `vlmdpo.train(config)`, ...
Imports are lazy so that `import vlmdpo` (and `vlmdpo data check`) stays fast and torch-free.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_preferences": ("vlmdpo.data.load", "load_preferences"),
    "iter_preferences": ("vlmdpo.data.load", "iter_preferences"),
    "load_config": ("vlmdpo.config", "load_config"),
    "TrainConfig": ("vlmdpo.config", "TrainConfig"),
    "PreferenceRecord": ("vlmdpo.types", "PreferenceRecord"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name == "train":
        # `vlmdpo.train` is both the subpackage and, called, the training entry point.
        return importlib.import_module("vlmdpo.train")
    raise AttributeError(f"module 'vlmdpo' has no attribute {name!r}")


__all__ = ["__version__", "train", *_LAZY]
