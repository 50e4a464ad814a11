"""Training: `run_training(cfg) -> TrainResult` on accelerate (see loop.py).

This package is also callable, so `vlmdpo.train(config, **overrides)` works as the API promises
even though `vlmdpo.train` names the package: Python sets a package attribute to the submodule
on import, which would otherwise shadow a function of the same name.
"""
from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["run_training", "TrainResult", "TrainingError"]


def __getattr__(name: str) -> Any:  # keep `import vlmdpo.train` light: torch loads on first use
    if name in ("run_training", "TrainResult"):
        from vlmdpo.train import loop

        return getattr(loop, name)
    if name == "TrainingError":
        from vlmdpo.train.step import TrainingError

        return TrainingError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    def __call__(self, config: Any = None, **overrides: Any):
        from vlmdpo.api import train

        return train(config, **overrides)


sys.modules[__name__].__class__ = _CallableModule
