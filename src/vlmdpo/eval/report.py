"""`report.html` with PNG plots: training curves, base vs tuned bars, and example answers.

Everything here takes plain data (dicts from `eval.json`, rows from `metrics.jsonl`), so a
report can be redrawn from the files of an earlier run without a model.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

CURVES_PNG = "training_curves.png"
BARS_PNG = "base_vs_tuned.png"
EXAMPLES_PNG = "examples.png"
REPORT_HTML = "report.html"
_MODEL_COLORS = {"base": "#9aa5b1", "tuned": "#2f80ed"}


@dataclass
class Example:
    image: Any  # a path, or a PIL image
    question: str
    truth: str | None
    answers: dict[str, str]  # model label -> answer text
    correct: dict[str, bool | None] = field(default_factory=dict)
    kind: str | None = None


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless; figures are closed after saving
    import matplotlib.pyplot as plt

    return plt


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def bar_values(models: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], dict[str, list[float]]]:
    """Bar groups (metric labels) and per-model heights in percent; a missing value is NaN.

    Groups: reward accuracy, the model's own log-prob preference, grounded-answer accuracy
    overall and per question kind.
    """
    kinds = sorted({k for m in models.values() for k in ((m.get("grounded") or {}).get("by_kind") or {})})
    labels = ["reward acc.", "prefers chosen", "grounded answers"] + [f"grounded: {k}" for k in kinds]
    heights: dict[str, list[float]] = {}
    for name, m in models.items():
        pref = m.get("preference") or {}
        grounded = m.get("grounded") or {}
        by_kind = grounded.get("by_kind") or {}
        vals = [pref.get("reward_accuracy"), pref.get("logp_accuracy"), grounded.get("accuracy")]
        vals += [(by_kind.get(k) or {}).get("accuracy") for k in kinds]
        heights[name] = [100.0 * v if _finite(v) else float("nan") for v in vals]
    return labels, heights


def plot_base_vs_tuned(models: Mapping[str, Mapping[str, Any]], out_path: Path) -> Path:
    plt = _plt()
    labels, heights = bar_values(models)
    n = len(heights)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(labels) + 2), 3.8))
    for j, (name, vals) in enumerate(heights.items()):
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(labels))]
        bars = ax.bar(xs, [0 if math.isnan(v) else v for v in vals], width, label=name,
                      color=_MODEL_COLORS.get(name))
        for b, v in zip(bars, vals):
            ax.annotate("n/a" if math.isnan(v) else f"{v:.0f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_ylim(0, 109)
    ax.set_ylabel("% of held-out pairs")
    ax.axhline(50, color="k", lw=0.5, ls=":")
    ax.legend()
    ax.set_title("base vs tuned on the test split")
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def _open_image(image: Any):
    from PIL import Image

    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return im.convert("RGB")
    return image.convert("RGB")


def _mark(ok: bool | None) -> str:
    return {True: "✓", False: "✗", None: "·"}[ok]


def plot_examples(examples: Sequence[Example], out_path: Path, *, columns: int = 4) -> Path | None:
    """A grid of test images, each with its question, the truth and every model's answer."""
    if not examples:
        return None
    import textwrap

    plt = _plt()
    rows = math.ceil(len(examples) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 4.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, ex in zip(axes.flat, examples):
        ax.axis("on")
        ax.imshow(_open_image(ex.image))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(textwrap.fill(ex.question, 34), fontsize=8)
        lines = [f"truth: {ex.truth}" if ex.truth is not None else ""]
        for name, ans in ex.answers.items():
            ans = "".join(c if c.isprintable() else " " for c in ans)  # control bytes from an untrained model
            short = ans if len(ans) <= 60 else ans[:57] + "..."
            lines.append(textwrap.fill(f"{_mark(ex.correct.get(name))} {name}: {short}", 38))
        tuned_ok = ex.correct.get("tuned")
        # the label (not free text) so tight_layout leaves room for it
        ax.set_xlabel("\n".join(x for x in lines if x), fontsize=7.5, loc="left", family="monospace",
                      color={True: "green", False: "firebrick"}.get(tuned_ok, "black"))
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return out_path


def plot_curves(metrics_rows: Sequence[Mapping[str, Any]], out_path: Path) -> Path | None:
    """Training loss, reward accuracy and margins over steps (train and eval), or None without rows."""
    from vlmdpo.train.plot import plot_training_curves

    return plot_training_curves(list(metrics_rows), out_path)


# ------------------------------------------------------------------------------------------ HTML
def _fmt(v: Any, pct: bool = False) -> str:
    if not _finite(v):
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def summary_rows(models: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """(metric label, formatted value per model) for the summary table."""
    spec = [
        ("reward accuracy (implicit, vs base)", "preference", "reward_accuracy", True),
        ("reward margin (mean)", "preference", "reward_margin", False),
        ("prefers chosen (own log-probs)", "preference", "logp_accuracy", True),
        ("log-prob margin chosen - rejected", "preference", "logp_margin", False),
        ("grounded-answer accuracy", "grounded", "accuracy", True),
    ]
    rows = [(label, [_fmt((m.get(sec) or {}).get(key), pct) for m in models.values()])
            for label, sec, key, pct in spec]
    kinds = sorted({k for m in models.values() for k in ((m.get("grounded") or {}).get("by_kind") or {})})
    for k in kinds:
        rows.append((f"grounded: {k}", [_fmt(((m.get("grounded") or {}).get("by_kind") or {}).get(k, {}).get("accuracy"),
                                             True) for m in models.values()]))
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#f3f4f6}.ok{color:#1a7f37}.bad{color:#b42318}img{max-width:100%}code{background:#f3f4f6}
"""


def write_report(out_dir: str | Path, *, summary: Mapping[str, Any], metrics_rows: Sequence[Mapping[str, Any]] = (),
                 examples: Sequence[Example] = (), title: str = "vlmdpo evaluation") -> Path:
    """Write the PNGs and report.html into `out_dir`; returns the HTML path.

    `summary` holds "models" ({label: {"preference": ..., "grounded": ...}}), and optionally
    "settings" (shown as a table) and "targets" ([{"name", "value", "target", "met"}]).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = summary.get("models") or {}
    parts = [f"<h1>{html.escape(title)}</h1>"]
    settings = summary.get("settings") or {}
    if settings:
        parts.append(_table(["setting", "value"], [(html.escape(str(k)), html.escape(str(v)))
                                                  for k, v in settings.items()]))
    targets = summary.get("targets") or []
    if targets:
        parts.append("<h2>Targets</h2>")
        parts.append(_table(["target", "measured", "wanted", ""], [
            (html.escape(t["name"]), html.escape(str(t["value"])), html.escape(str(t["target"])),
             '<span class="ok">met</span>' if t.get("met") else '<span class="bad">not met</span>')
            for t in targets]))
    if models:
        parts.append("<h2>Held-out results</h2>")
        parts.append(_table(["metric", *models.keys()], [(html.escape(l), *v) for l, v in summary_rows(models)]))
        plot_base_vs_tuned(models, out / BARS_PNG)
        parts.append(f'<img src="{BARS_PNG}" alt="base vs tuned">')
    if metrics_rows and plot_curves(metrics_rows, out / CURVES_PNG) is not None:
        parts.append("<h2>Training</h2>")
        parts.append(f'<img src="{CURVES_PNG}" alt="training curves">')
    if examples:
        parts.append("<h2>Example answers</h2>")
        plot_examples(examples, out / EXAMPLES_PNG)
        parts.append(f'<img src="{EXAMPLES_PNG}" alt="example answers">')
        names = list(examples[0].answers)
        rows = []
        for ex in examples:
            cells = [html.escape(ex.question), html.escape(str(ex.truth))]
            for n in names:
                ok = ex.correct.get(n)
                cls = "ok" if ok else ("bad" if ok is False else "")
                cells.append(f'<span class="{cls}">{_mark(ok)} {html.escape(ex.answers.get(n, ""))}</span>')
            rows.append(cells)
        parts.append(_table(["question", "truth", *names], rows))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")
    path = out / REPORT_HTML
    path.write_text(page, encoding="utf-8")
    return path
