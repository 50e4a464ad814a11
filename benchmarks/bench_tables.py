"""Markdown tables of vs_trl.py's report: same-batch comparison and largest-batch search."""
from __future__ import annotations

SIDES = ("trl", "vlmdpo")
VARIANT_SIDES = ("vlmdpo-plain", "vlmdpo-refcache")


def num(x, n=2) -> str:
    return "-" if x is None else f"{x:,.{n}f}"


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(summary: list[dict]) -> str:
    extras = sorted({k for s in summary for k in s if k in VARIANT_SIDES})
    head = ("| model | mode | batch | TRL pairs/s | vlmdpo pairs/s | ratio | " + "".join(f"{x} pairs/s (ratio) | " for x in extras)
            + "ratio (CPU s) | TRL tok/s | vlmdpo tok/s | TRL peak GiB | vlmdpo peak GiB | mem ratio | TRL MFU | vlmdpo MFU |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in summary:
        t, v = s.get("trl") or {}, s.get("vlmdpo") or {}
        ext = "".join(f"{num((s.get(x) or {}).get('pairs_per_s'))} ({num(s.get(f'ratio_pairs_per_s_{x}'))}x) | " for x in extras)
        lines.append(f"| {s['model']} | {s['mode']} | {s['batch']} | {num(t.get('pairs_per_s'))} | "
                     f"{num(v.get('pairs_per_s'))} | {num(s.get('ratio_pairs_per_s'))}x | {ext}{num(s.get('ratio_pairs_per_cpu_s'))}x | "
                     f"{num(t.get('tokens_per_s'), 0)} | {num(v.get('tokens_per_s'), 0)} | {num(t.get('peak_mem_gib'))} | "
                     f"{num(v.get('peak_mem_gib'))} | {num(s.get('ratio_peak_mem'))}x | {pct(t.get('mfu'))} | {pct(v.get('mfu'))} |")
    return "\n".join(lines)


def max_batch_table(searches: list[dict]) -> str:
    lines = ["| model | mode | side | largest batch | stopped by | pairs/s there | peak GiB there | MFU there | best pairs/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in searches:
        for side in SIDES:
            r = m.get(side) or {}
            lines.append(f"| {m['model']} | {m['mode']} | {side} | {r.get('largest_batch') or '-'} | {r.get('stopped_by', '-')} | "
                         f"{num(r.get('pairs_per_s'))} | {num(r.get('peak_mem_gib'))} | {pct(r.get('mfu'))} | "
                         f"{num(r.get('best_pairs_per_s'))} |")
    return "\n".join(lines)
