"""Checkpoints: atomic, rotated, resumable, holding only what changes.

A checkpoint folder `checkpoint-<step>` is written under a temporary name and renamed into
place (os.replace) once complete, so a crash never leaves a half-written checkpoint that resume
would pick. It holds accelerate's state (trainable weights, optimizer, scheduler, RNG of every
process) and `trainer_state.json` (step, position in the epoch, best eval loss, ...).
Frozen weights never change, so they are not saved; loading is non-strict for the same reason.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
_STEP = re.compile(rf"^{PREFIX}(\d+)$")


@dataclass
class TrainState:
    global_step: int = 0
    epoch: int = 0  # epoch in progress
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed (per process)
    pairs_seen: int = 0
    tokens_seen: int = 0
    best_eval_loss: float | None = None
    best_checkpoint: str | None = None
    evals_without_improvement: int = 0
    bco_running_mean: dict[str, float] = field(default_factory=lambda: {"mean": 0.0, "count": 0})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_file(cls, path: Path) -> "TrainState":
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def checkpoint_step(path: Path) -> int | None:
    m = _STEP.match(path.name)
    return int(m.group(1)) if m else None


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints (those with a trainer_state.json), oldest first."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir()
             if p.is_dir() and checkpoint_step(p) is not None and (p / STATE_FILE).is_file()]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_resume(value: str | None, output_dir: Path) -> Path | None:
    """`auto` -> latest checkpoint in output_dir (None when there is none); a path -> that checkpoint."""
    if value is None:
        return None
    if value == "auto":
        return latest_checkpoint(output_dir)
    path = Path(value)
    if not (path / STATE_FILE).is_file():
        raise ValueError(f"resume_from_checkpoint: '{value}' is not a vlmdpo checkpoint (no {STATE_FILE} inside); "
                         f"give a checkpoint-<step> folder from a previous run's output_dir, or 'auto'")
    return path


def save_checkpoint(accelerator, output_dir: Path, state: TrainState) -> Path:
    """Every process must call this (each saves its own RNG state); the main process renames."""
    final = output_dir / f"{PREFIX}{state.global_step}"
    tmp = output_dir / f".tmp-{PREFIX}{state.global_step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left over from a crash
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(state.to_json(), encoding="utf-8")
        if final.exists():  # the same step saved twice (e.g. eval-best and save_steps): keep the newest
            shutil.rmtree(final)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path) -> TrainState:
    accelerator.load_state(str(path), strict=False)
    return TrainState.from_file(path / STATE_FILE)


def rotate_checkpoints(output_dir: Path, limit: int | None, *, keep: Path | None = None) -> list[Path]:
    """Delete the oldest checkpoints beyond `limit`. The newest (for resume) and `keep` (the best,
    for early stopping) always survive, so with both set one more than `limit` may remain (as HF)."""
    if not limit:
        return []
    found = list_checkpoints(output_dir)
    protected = {found[-1].name} if found else set()
    if keep is not None:
        protected.add(keep.name)
    removed = []
    for p in found:
        if len(found) - len(removed) <= limit:
            break
        if p.name not in protected:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def install_trainable_only_hooks(accelerator, model) -> None:
    """Make accelerate's save_state keep only trainable tensors (a LoRA checkpoint stays megabytes)."""

    def keep_trainable(models: list[Any], weights: list[dict], output_dir: str) -> None:
        for m, sd in zip(models, weights):
            trainable = {n for n, p in m.named_parameters() if p.requires_grad}
            seen: set[int] = set()
            for k in list(sd):
                t = sd[k]
                ptr = t.data_ptr() if hasattr(t, "data_ptr") else id(t)
                # tied weights share storage; safetensors refuses duplicates, and loading one restores both
                if k not in trainable or ptr in seen:
                    del sd[k]
                else:
                    seen.add(ptr)

    accelerator.register_save_state_pre_hook(keep_trainable)
