"""`vlmdpo runs list OUTPUT_DIR`: a run's final model and checkpoints, each with its step, eval loss and reward
accuracy (from metrics.jsonl and trainer_state.json), the best marked. cli.py registers `add_parser`."""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class RunModel:
    name: str  # "final" or checkpoint-N
    path: Path
    step: int | None
    eval_loss: float | None
    reward_accuracy: float | None
    best: bool = False


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="a training run's models: the final one and each checkpoint")
    rsub = p.add_subparsers(dest="runs_command", metavar="{list}")
    rsub.required = True
    q = rsub.add_parser("list", help="final model and checkpoints with step, eval loss, reward accuracy; best marked",
                        description="Every folder listed works as --model for chat, eval, compare, export and serve.")
    q.add_argument("output_dir", metavar="OUTPUT_DIR", help="a training run's output_dir")
    q.set_defaults(func=_run_list)


def _run_list(args: argparse.Namespace) -> int:
    print(format_runs(list_run(Path(args.output_dir))))
    return 0


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _evals_by_step(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(r["step"]): r for r in rows if "eval_loss" in r and isinstance(r.get("step"), int)}


def list_run(output_dir: Path) -> list[RunModel]:
    """The checkpoints (oldest first), then the final model when output_dir holds one."""
    from vlmdpo.errors import FixableError
    from vlmdpo.train.checkpoint import STATE_FILE, list_checkpoints
    from vlmdpo.train.metrics import read_metrics

    if not output_dir.is_dir():
        raise FixableError(f"{output_dir}: no such folder", "pass a training run's output_dir")
    evals = _evals_by_step(read_metrics(output_dir / "metrics.jsonl"))
    out: list[RunModel] = []
    best_path = None
    for path in list_checkpoints(output_dir):
        state = _read_json(path / STATE_FILE)
        step = state.get("global_step")
        row = evals.get(step, {}) if isinstance(step, int) else {}
        out.append(RunModel(path.name, path, step, row.get("eval_loss"), row.get("eval_rewards/accuracies")))
        best_path = state.get("best_checkpoint") or best_path
    if (output_dir / "adapter_config.json").is_file() or (output_dir / "config.json").is_file():
        results = _read_json(output_dir / "train_results.json")
        final = results.get("eval") if isinstance(results.get("eval"), dict) else {}
        out.append(RunModel("final", output_dir, results.get("global_step"), final.get("eval_loss"),
                            final.get("eval_rewards/accuracies")))
    if not out:
        raise FixableError(f"{output_dir}: no final model and no checkpoints", "pass a training run's output_dir")
    best = next((m for m in out if best_path and m.path.name == Path(best_path).name), None)
    if best is None:
        scored = [m for m in out if m.eval_loss is not None]
        best = min(scored, key=lambda m: m.eval_loss) if scored else None
    if best is not None:
        best.best = True
    return out


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def format_runs(models: list[RunModel]) -> str:
    width = max(len(str(m.path)) for m in models)
    lines = [f"{'model':<{width}}  {'step':>6}  {'eval_loss':>9}  {'reward_acc':>10}"]
    for m in models:
        mark = "  best" if m.best else ""
        lines.append(f"{str(m.path):<{width}}  {_fmt(m.step, 'd'):>6}  {_fmt(m.eval_loss, '.4f'):>9}  "
                     f"{_fmt(m.reward_accuracy, '.3f'):>10}{mark}")
    if not any(m.best for m in models):
        lines.append("(no evaluation logged: set eval_dataset or val_size to mark the best)")
    return "\n".join(lines)
