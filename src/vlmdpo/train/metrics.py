"""Metric averaging, throughput, peak memory, and the metrics.jsonl log.

metrics.jsonl holds one JSON object per line: training lines have `step`, `epoch` and TRL's
names (`loss`, `rewards/accuracies`, ...) plus `grad_norm`, `learning_rate`, `pairs/s`,
`tokens/s`, `peak_memory_gb`; evaluation lines have `step`, `epoch` and `eval_`-prefixed names.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from vlmdpo import atomic
from vlmdpo.errors import FixableError


class WeightedMean:
    """Accumulates metric values weighted by the number of pairs they were computed on."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weight = 0.0

    def add(self, metrics: Mapping[str, Any], weight: float = 1.0) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * weight
        self.weight += weight

    def result(self) -> dict[str, float]:
        if not self.weight:
            return {}
        return {k: v / self.weight for k, v in self.sums.items()}

    def reset(self) -> None:
        self.sums, self.weight = {}, 0.0


def reduce_across_processes(accelerator, means: dict[str, float], weight: float) -> dict[str, float]:
    """Weighted mean over processes; every process must call it with the same keys."""
    if accelerator is None or accelerator.num_processes == 1:
        return means
    keys = sorted(means)
    vec = torch.tensor([means[k] * weight for k in keys] + [weight], dtype=torch.float64, device=accelerator.device)
    vec = accelerator.reduce(vec, reduction="sum")
    total = vec[-1].item()
    return {k: (vec[i].item() / total if total else float("nan")) for i, k in enumerate(keys)}


class Throughput:
    """Pairs and tokens per second over the interval since the last `rates()` call."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.pairs = 0
        self.tokens = 0

    def add(self, pairs: int, tokens: int) -> None:
        self.pairs += pairs
        self.tokens += tokens

    def rates(self) -> dict[str, float]:
        dt = max(time.perf_counter() - self.start, 1e-9)
        out = {"pairs/s": self.pairs / dt, "tokens/s": self.tokens / dt}
        self.__init__()
        return out


def peak_memory_gb(device: torch.device) -> float:
    """Peak accelerator memory on GPU; peak resident memory of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 2**30 * (1 if sys.platform == "darwin" else 1024)
    except (ImportError, OSError):
        return float("nan")


def prefixed(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in metrics.items()}


class MetricsLog:
    """Appends to output_dir/metrics.jsonl (main process only) and forwards to trackers."""

    def __init__(self, path: Path, *, enabled: bool, accelerator=None, use_trackers: bool = False,
                 truncate_after_step: int | None = None) -> None:
        self.path = path
        self.enabled = enabled
        self.accelerator = accelerator
        self.use_trackers = use_trackers
        if enabled and truncate_after_step is not None:
            _drop_lines_after(path, truncate_after_step)

    def write(self, step: int, epoch: float, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "epoch": round(epoch, 4), **{k: _clean(v) for k, v in metrics.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.use_trackers and self.accelerator is not None:
            self.accelerator.log(dict(metrics), step=step)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The log's rows. A partial last line (the run was killed while writing it) is left out;
    a damaged line elsewhere is one error naming the file and line."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):  # no newline after it: cut off by a kill
                continue
            raise FixableError(f"{path}:{i}: not a JSON line (the metrics log is damaged)",
                               f"delete line {i} of {path.name} (or the whole file: it is only the log)") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _drop_lines_after(path: Path, step: int) -> None:
    """On resume, lines logged after the checkpoint would be logged again; keep the log a single history."""
    if not path.is_file():
        return
    keep = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    atomic.write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def _clean(v: Any) -> Any:
    # JSON has no NaN/inf; keep the line parseable and the value visible.
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def format_postfix(metrics: Mapping[str, float], keys: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {short: f"{metrics[k]:.4g}" for k, short in keys if k in metrics}
