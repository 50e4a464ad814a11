"""`vlmdpo iterate`'s record: rounds.jsonl (one row per finished round), rounds.md (the table) and
rounds.png (held-out metrics per round), all rewritten whole from the rounds' own round.json files."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

COLUMNS = ("round", "pairs made", "dropped (one answer / ties / low margin)", "train loss", "held-out reward accuracy",
           "held-out grounded accuracy", "time")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _pct(value: Any) -> str:
    v = _num(value)
    return "—" if v is None else f"{100 * v:.1f}%"


def _duration(seconds: Any) -> str:
    s = _num(seconds) or 0.0
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def table_rows(records: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for rec in records:
        first = rec["round"] == 0
        loss = _num(rec.get("train_loss"))
        rows.append([str(rec["round"]) + (" (start)" if first else ""),
                     "—" if first else str(rec.get("pairs", 0)),
                     "—" if first else " / ".join(str(rec.get(k, 0)) for k in ("one_answer", "ties", "low_margin")),
                     "—" if loss is None else f"{loss:.4f}",
                     _pct(rec.get("reward_accuracy")), _pct(rec.get("grounded_accuracy")),
                     _duration(rec.get("seconds"))])
    return rows


def markdown(records: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(records)]
    return "\n".join(lines) + "\n"


def text_table(records: Sequence[dict[str, Any]]) -> str:
    """The same table for a terminal: columns padded to their widths."""
    rows = [list(COLUMNS)] + table_rows(records)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def plot_rounds(records: Sequence[dict[str, Any]], out_path: Path) -> Path | None:
    """Held-out reward accuracy and grounded accuracy per round; None when no round was evaluated."""
    series = {label: [(r["round"], _num(r.get(key))) for r in records if _num(r.get(key)) is not None]
              for key, label in (("reward_accuracy", "reward accuracy (vs the start)"),
                                 ("grounded_accuracy", "grounded accuracy"))}
    if not any(series.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, points in series.items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=label)
    ax.set_xlabel("round (0 = the starting model)")
    ax.set_ylabel("held-out")
    ax.set_xticks([r["round"] for r in records])
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def write_record(output_dir: Path, records: Sequence[dict[str, Any]]) -> None:
    from vlmdpo.atomic import write_text

    write_text(output_dir / "rounds.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in records))
    write_text(output_dir / "rounds.md", "# vlmdpo iterate\n\n" + markdown(records))
    plot_rounds(records, output_dir / "rounds.png")
