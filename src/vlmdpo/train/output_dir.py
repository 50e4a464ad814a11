"""The output_dir of a new run: refused when it holds a previous run's files, unless asked to continue or replace."""
from __future__ import annotations

from pathlib import Path

from vlmdpo.errors import FixableError

# what a training run leaves in output_dir (checkpoint-N folders are found by name)
RUN_FILES = ("metrics.jsonl", "train_results.json", "vlmdpo_config.yaml", "adapter_config.json",
             "adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "config.json")


def previous_run_files(out: Path) -> list[str]:
    """Names in `out` that a training run wrote (empty for a missing or unrelated folder)."""
    if not out.is_dir():
        return []
    found = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name.startswith("checkpoint-"))
    return found + [name for name in RUN_FILES if (out / name).is_file()]


def check_output_dir(cfg, out: Path) -> None:
    """A previous run's output_dir is reused only with resume_from_checkpoint or overwrite_output_dir."""
    if cfg.resume_from_checkpoint or cfg.overwrite_output_dir:
        return
    found = previous_run_files(out)
    if found:
        shown = ", ".join(found[:4]) + (" ..." if len(found) > 4 else "")
        raise FixableError(f"output_dir: '{out}' holds a previous run ({shown})",
                           "set resume_from_checkpoint: auto to continue it, overwrite_output_dir: true to train "
                           "a new run over it, or choose a new output_dir")
