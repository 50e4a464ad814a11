"""Python API entry points that mirror the CLI."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmdpo.config import TrainConfig, build_config, load_config


def resolve_config(config: TrainConfig | str | Path | dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """A TrainConfig from a config object, a YAML path, or a dict, with keyword overrides applied."""
    if isinstance(config, TrainConfig):
        if not overrides:
            return config
        # exclude_unset: re-validate only what the user chose, so derived defaults (learning_rate
        # for the fine-tuning type) are derived again from the new values
        return build_config({**config.model_dump(exclude_unset=True), **overrides}, override_keys=list(overrides))
    if isinstance(config, dict):
        return load_config(None, {**config, **overrides})
    return load_config(config, overrides)


def train(config: TrainConfig | str | Path | dict[str, Any] | None = None, **overrides: Any):
    """Train as `vlmdpo train config.yaml key=value ...` does; returns a `TrainResult`.

    `vlmdpo.train("config.yaml", max_steps=10)`, `vlmdpo.train({"model_name_or_path": ..., ...})`.
    """
    from vlmdpo.train.loop import run_training

    return run_training(resolve_config(config, **overrides))
