"""Training curves as a PNG: loss and reward accuracy over steps, train and eval."""
from __future__ import annotations

import os

from pathlib import Path
from typing import Any, Sequence

PANELS = (("loss", "loss"), ("rewards/accuracies", "reward accuracy"), ("rewards/margins", "reward margin"))


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)):
            xs.append(r["step"])
            ys.append(float(v))
    return xs, ys


def plot_training_curves(rows: Sequence[dict[str, Any]], out_path: Path) -> Path | None:
    """Write the PNG; returns None when there is nothing to plot."""
    if not any(isinstance(r.get("loss"), (int, float)) or isinstance(r.get("eval_loss"), (int, float))
               for r in rows):
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; also safe inside notebooks (figure closed below)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 3.6))
    for ax, (key, title) in zip(axes, PANELS):
        for prefix, style, label in (("", "-", "train"), ("eval_", "o--", "eval")):
            xs, ys = _series(rows, prefix + key)
            if xs:
                ax.plot(xs, ys, style, label=label, markersize=4)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    fig.savefig(tmp, dpi=100, format=out_path.suffix.lstrip(".") or "png")
    plt.close(fig)
    os.replace(tmp, out_path)  # whole or absent, as every file a run writes
    return out_path
