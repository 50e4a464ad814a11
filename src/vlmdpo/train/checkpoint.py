"""Checkpoints: atomic, rotated, resumable, holding only what changes.

A checkpoint folder `checkpoint-<step>` is written under a temporary name and renamed into
place (os.replace) once complete, so a crash never leaves a half-written checkpoint that resume
would pick. It holds the trainable weights, the optimizer and schedule state, the RNG state of every process
(state_files.py: safetensors and JSON, never pickle), the run's fingerprint (`run.json`) and
`trainer_state.json` (step, position in the epoch, best eval loss, ...), written last.
Frozen weights never change, so they are not saved.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmdpo import atomic
from vlmdpo.train import state_files as files
from vlmdpo.train.fingerprint import FILE as FINGERPRINT_FILE

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
    best_eval_loss: float | None = None  # lowest eval_loss seen
    best_metric: float | None = None  # best metric_for_best_model seen (the best checkpoint's)
    best_checkpoint: str | None = None
    evals_without_improvement: int = 0
    bco_running_mean: dict[str, float] = field(default_factory=lambda: {"mean": 0.0, "count": 0})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)



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


def save_checkpoint(accelerator, output_dir: Path, state: TrainState, *, model, optimizer, scheduler,
                    fingerprint: dict[str, Any]) -> Path:
    """Every process must call this (each saves its own RNG state); the main process renames.

    Only finite weights are saved (the caller checks with `files.nonfinite` first)."""
    final = output_dir / f"{PREFIX}{state.global_step}"
    tmp = output_dir / f".tmp-{PREFIX}{state.global_step}"
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(tmp, ignore_errors=True)  # left over from a crash
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    files.save_rng(tmp, accelerator.process_index)
    if main:
        files.save_model(tmp, accelerator.unwrap_model(model))
        files.save_optimizer(tmp, optimizer)
        files.save_json(tmp / files.SCHEDULER, scheduler.state_dict())
        if accelerator.scaler is not None:
            files.save_json(tmp / files.SCALER, accelerator.scaler.state_dict())
        files.save_json(tmp / FINGERPRINT_FILE, fingerprint)
        atomic.write_text(tmp / STATE_FILE, state.to_json())  # last: its presence marks a complete checkpoint
    accelerator.wait_for_everyone()
    if main:
        if final.exists():  # the same step saved twice (e.g. eval-best and save_steps): keep the newest
            shutil.rmtree(final)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final


def fix_for(path: Path) -> str:
    """What to do about a damaged checkpoint: an earlier one, else a fresh start."""
    earlier = [p for p in list_checkpoints(path.parent) if (checkpoint_step(p) or 0) < (checkpoint_step(path) or 0)]
    if earlier:
        return (f"resume from an earlier checkpoint (resume_from_checkpoint={earlier[-1]}), "
                f"or delete {path.name} and use resume_from_checkpoint=auto")
    return f"delete {path} and start again (or resume from another checkpoint)"


def read_state(path: Path) -> TrainState:
    data = files.read_json(path / STATE_FILE, fix_for(path))
    try:
        return TrainState(**data)
    except TypeError as e:
        raise files.CheckpointError(f"{path / STATE_FILE}: not a vlmdpo trainer state ({e})", fix_for(path)) from None


def read_fingerprint(path: Path) -> dict[str, Any]:
    if not (path / FINGERPRINT_FILE).is_file():
        raise files.CheckpointError(
            f"{path}: written by an older vlmdpo (no {FINGERPRINT_FILE}, state in pickle files, which are not loaded)",
            "start a new run in a new output_dir")
    return files.read_json(path / FINGERPRINT_FILE, fix_for(path))


def load_checkpoint(accelerator, path: Path, *, model, optimizer, scheduler, load_schedule: bool = True) -> TrainState:
    """Weights, optimizer, schedule (unless the caller sets a changed one itself), RNG, and the state."""
    fix = fix_for(path)
    state = read_state(path)
    files.load_model(path, accelerator.unwrap_model(model), fix)
    files.load_optimizer(path, getattr(optimizer, "optimizer", optimizer), fix)
    sched = files.read_json(path / files.SCHEDULER, fix)  # read (and checked) even when a changed one replaces it
    if not isinstance(sched, dict) or "last_epoch" not in sched:
        raise files.CheckpointError(f"{path / files.SCHEDULER}: not a schedule state", fix)
    if load_schedule:
        scheduler.load_state_dict(sched)
    if accelerator.scaler is not None and (path / files.SCALER).is_file():
        accelerator.scaler.load_state_dict(files.read_json(path / files.SCALER, fix))
    files.load_rng(path, accelerator.process_index, fix)
    return state


def finite_weights(path: Path) -> bool:
    """Whether the checkpoint's weights load and are all finite."""
    from safetensors.torch import load_file

    try:
        return not files.nonfinite(load_file(str(path / files.MODEL)))
    except Exception:  # unreadable means not resumable; the reason is reported when it is loaded
        return False


def load_weights(accelerator, path: Path, model) -> None:
    """Only the trainable weights (restoring the best checkpoint at the end)."""
    files.load_model(path, accelerator.unwrap_model(model), fix_for(path))


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
