"""Checks at train setup that need the device or the model's family: precision and `template`."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from vlmdpo.config import ConfigError
from vlmdpo.config.dialects import template_problem
from vlmdpo.config.precision import mixed_precision
from vlmdpo.train.stages import stderr


def preflight(cfg, say: Callable[[str], None] = stderr) -> str:
    """accelerate's mixed_precision for this device; a ConfigError for a precision the device lacks or
    a `template` that does not fit the model. Hub ids are not read here (no network before data)."""
    precision = mixed_precision(cfg.bf16, cfg.fp16)
    if cfg.template:
        from vlmdpo.inference.names import BUILTIN, TINY, family_of

        name = cfg.model_name_or_path
        if name.startswith((TINY, BUILTIN)) or Path(name).is_dir():
            problem = template_problem(cfg.template, family_of(name).name, name)
            if problem:
                raise ConfigError(problem)
        else:
            say(f"template: {cfg.template} is not checked against {name} (a hub id, read only when it loads); "
                "the model's own chat template is used")
    return precision
