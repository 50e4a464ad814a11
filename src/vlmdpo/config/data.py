"""Config keys: the preference data, its checks and where outputs go."""
from __future__ import annotations

from typing import Literal

from vlmdpo.config.base import Keys, peer


class DataKeys(Keys):
    """Data: the preference pairs, how they are checked, and where outputs go."""

    dataset: str | list[str] | None = peer(None, trl="~dataset_name", llamafactory="dataset")
    """Training pairs: a file, a folder, a name in dataset_dir's dataset_info.json, a Hub dataset, or a list."""
    dataset_dir: str = peer("data", llamafactory="dataset_dir")
    """Folder whose dataset_info.json registers dataset names (as in LLaMA-Factory; ONLINE = the hub)."""
    format: str = "auto"
    """Record format (trl, sharegpt, alpaca, swift, rlaifv, rlhfv; see docs/FORMATS.md); auto detects it per file."""
    image_root: str | None = peer(None, llamafactory="media_dir")
    """Folder that relative image paths in the data are resolved against."""
    image_path_map: dict[str, str] | None = None
    """Re-home image/video paths written on another machine: {old prefix: new prefix}, e.g. {"/data": "/mnt/data"}."""
    allow_remote_images: bool = False
    """Allow http(s) image URLs in the data (each at most 64 MiB, downloaded within 30 s; 256 MiB kept in memory)."""
    on_invalid: Literal["error", "skip"] = "error"
    """What an invalid record does: stop with its file:row, or skip it and report it."""
    check_images: Literal["none", "header", "decode"] = "header"
    """How far images are checked before training: not at all, their header, or a full decode."""
    eval_dataset: str | list[str] | None = peer(None, llamafactory="eval_dataset")
    """Evaluation pairs (same forms as dataset); exclusive with val_size."""
    test_dataset: str | list[str] | None = None
    """Held-out pairs for `vlmdpo eval` (never seen in training)."""
    val_size: float = peer(0.0, llamafactory="val_size")
    """Evaluation pairs split off the training data: a fraction in (0, 1), or a whole number of pairs >= 1."""
    max_samples: int | None = peer(None, llamafactory="max_samples")
    """Read at most this many rows of each data file (first rows first), for quick trials; null = all."""
    output_dir: str = peer("outputs/vlmdpo", trl="output_dir", llamafactory="output_dir")
    """Folder for checkpoints, the final model, metrics and plots."""

    def problems(self) -> list[str]:
        problems = []
        if not self.dataset:
            problems.append("dataset: missing; give a preference file, a folder, a hub dataset name, or a list of those")
        if self.val_size < 0 or (self.val_size >= 1 and self.val_size != int(self.val_size)):
            problems.append(f"val_size: must be a fraction in [0, 1) or a whole number of pairs (got {self.val_size})")
        bad = [old for old, new in (self.image_path_map or {}).items() if not old.strip() or not new.strip()]
        if bad:
            problems.append("image_path_map: each entry maps a folder prefix to another, e.g. {\"/data\": \"/mnt/data\"} "
                            f"(got an empty one: {bad[0]!r})")
        if self.max_samples is not None and self.max_samples < 1:
            problems.append(f"max_samples: must be >= 1 or left out (got {self.max_samples})")
        if self.val_size and self.eval_dataset:
            problems.append("val_size: set either val_size (split off the training data) or eval_dataset, not both")
        return problems

    @property
    def has_eval_data(self) -> bool:
        return bool(self.eval_dataset) or self.val_size > 0

    @property
    def datasets(self) -> list[str]:
        return [self.dataset] if isinstance(self.dataset, str) else list(self.dataset or [])
