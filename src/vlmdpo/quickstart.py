"""`vlmdpo quickstart`: the offline demo end to end, in one process.

demo data -> builtin:nano-smolvlm (built once, cached) -> DPO training with the packaged recipe
-> base vs tuned evaluation -> report.html. Every step is the public command of the same name
with the recipe's paths pointed under one folder, so what the quickstart shows is what a user
gets from `vlmdpo demo-data`, `vlmdpo train` and `vlmdpo eval`.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

RECIPE = "quickstart.yaml"
STEPS = ("demo data", "model build", "training", "evaluation")


def recipe_path() -> Path:
    """The packaged quickstart config (src/vlmdpo/recipes/quickstart.yaml)."""
    return Path(str(resources.files("vlmdpo") / "recipes" / RECIPE))


@dataclass
class QuickstartResult:
    out: Path
    report_path: Path
    summary: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)  # step -> wall seconds, plus "total"


def quickstart_config(out: Path, overrides: Sequence[str] | dict[str, Any] = ()):
    """The recipe with its data and output paths under `out` (user overrides win)."""
    from vlmdpo.config import load_config, parse_overrides

    data = out / "data"
    paths = {"dataset": str(data / "train.jsonl"), "eval_dataset": str(data / "val.jsonl"),
             "test_dataset": str(data / "test.jsonl"), "output_dir": str(out / "model"),
             "overwrite_output_dir": True}  # rerunning the quickstart retrains its own model
    extra = dict(overrides) if isinstance(overrides, dict) else parse_overrides(overrides)
    return load_config(recipe_path(), {**paths, **extra})


def run_quickstart(out: str | Path = "runs/quickstart", *, overrides: Sequence[str] | dict[str, Any] = (),
                   demo_sizes: dict[str, int] | None = None, progress: bool = True,
                   echo: Callable[[str], None] | None = None) -> QuickstartResult:
    """Run the four steps; write `<out>/quickstart.json` (timings, headline numbers) and return them.

    `demo_sizes` ({"n_train": 8, ...}) shrinks the demo data (tests); the default is the quickstart's.
    """
    from vlmdpo.demo_data import make_demo_data
    from vlmdpo.eval.run import run_eval
    from vlmdpo.inference.names import ensure_builtin, is_builtin
    from vlmdpo.model.builtin import say_progress
    from vlmdpo.train.loop import run_training

    say = echo or say_progress
    out = Path(out).expanduser()
    cfg = quickstart_config(out, overrides)  # a bad override fails here, before any work
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    def step(i: int, fn: Callable[[], Any]) -> Any:
        say(f"[{i + 1}/{len(STEPS)}] {STEPS[i]}")
        t0 = time.perf_counter()
        value = fn()
        seconds[STEPS[i]] = round(time.perf_counter() - t0, 1)
        say(f"[{i + 1}/{len(STEPS)}] {STEPS[i]}: {seconds[STEPS[i]]:.0f} s")
        return value

    ds = step(0, lambda: make_demo_data(out / "data", progress=progress, **(demo_sizes or {})))
    say(f"{'reused' if ds.reused else 'wrote'} {', '.join(f'{s} {n}' for s, n in ds.counts.items())} pairs in {ds.root}")
    if is_builtin(cfg.model_name_or_path):
        step(1, lambda: ensure_builtin(cfg.model_name_or_path, progress=say))
    else:
        seconds[STEPS[1]] = 0.0  # a user-chosen model is loaded by the training step
    step(2, lambda: run_training(cfg, echo=say))
    result = step(3, lambda: run_eval(cfg, progress=progress, echo=say))
    seconds["total"] = round(time.perf_counter() - start, 1)

    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": seconds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "config": str(recipe_path()), "overrides": overrides if isinstance(overrides, dict) else list(overrides),
        "report": str(result.report_path),
        "targets": result.summary.get("targets", []),
        "models": {label: _headline(m) for label, m in result.summary["models"].items()},
    }
    (out / "quickstart.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return QuickstartResult(out, result.report_path, result.summary, seconds)


def _headline(model: dict[str, Any]) -> dict[str, Any]:
    pref, grounded = model.get("preference") or {}, model.get("grounded") or {}
    return {"reward_accuracy": pref.get("reward_accuracy"), "reward_margin": pref.get("reward_margin"),
            "grounded_accuracy": grounded.get("accuracy"),
            "grounded_by_kind": {k: v.get("accuracy") for k, v in (grounded.get("by_kind") or {}).items()}}


def format_timings(seconds: dict[str, float]) -> str:
    parts = [f"{name} {seconds[name]:.0f} s" for name in STEPS if name in seconds]
    total = seconds.get("total")
    return ", ".join(parts) + (f"; total {total / 60:.1f} min" if total is not None else "")
