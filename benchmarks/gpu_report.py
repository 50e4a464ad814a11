#!/usr/bin/env python
"""results.md from what benchmarks/gpu_check.sh measured: correctness.json and speed.json in one folder.

    python benchmarks/gpu_report.py $OUT        # writes $OUT/results.md and prints it

The targets (issue 16): at the same batch and settings, vlmdpo >= 2x TRL's pairs/s at <= 0.6x its
peak memory; each at its largest batch, >= 3x TRL's pairs/s; Qwen2-VL-2B full fine-tuning at
MFU >= 35% (model FLOPs as `bench_common.model_flops_per_pair` counts them, over the dense bf16
peak of the device). A target whose runs did not finish reads "not measured", never "met".
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tables import num, pct  # noqa: E402

SAME_BATCH_SPEEDUP, SAME_BATCH_MEM, BEST_SPEEDUP, QWEN_MFU = 2.0, 0.6, 3.0, 0.35


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**missed**")


def targets(speed: dict) -> list[str]:
    rows = ["| target | configuration | measured | verdict |", "|---|---|---|---|"]
    for s in speed.get("summary", []):
        r, m = s.get("ratio_pairs_per_s"), s.get("ratio_peak_mem")
        ok = None if r is None else (r >= SAME_BATCH_SPEEDUP and m <= SAME_BATCH_MEM)
        rows.append(f"| same batch: >= {SAME_BATCH_SPEEDUP:g}x pairs/s at <= {SAME_BATCH_MEM:g}x peak memory | "
                    f"{s['model']} {s['mode']} b{s['batch']} | {num(r)}x pairs/s, {num(m)}x memory | {verdict(ok)} |")
    for mb in speed.get("max_batch", []):
        r = mb.get("ratio_best_vs_best")
        t, v = mb.get("trl") or {}, mb.get("vlmdpo") or {}
        cut = [side for side, x in (("TRL", t), ("vlmdpo", v)) if str(x.get("stopped_by", "")).startswith("time")]
        note = f" (search cut by time for {' and '.join(cut)}: a larger batch may fit)" if cut else ""
        rows.append(f"| best vs best: >= {BEST_SPEEDUP:g}x pairs/s | {mb['model']} {mb['mode']} (TRL b{t.get('largest_batch')}, "
                    f"vlmdpo b{v.get('largest_batch')}) | {num(r)}x | {verdict(None if r is None else r >= BEST_SPEEDUP)}{note} |")
    mfus = [(s["vlmdpo"]["mfu"], f"b{s['batch']}") for s in speed.get("summary", [])
            if s["model"] == "qwen2vl-2b" and s["mode"] == "full" and (s.get("vlmdpo") or {}).get("mfu") is not None]
    mfus += [((mb.get("vlmdpo") or {}).get("mfu"), f"b{mb['vlmdpo'].get('largest_batch')} (largest)")
             for mb in speed.get("max_batch", []) if mb["model"] == "qwen2vl-2b" and mb["mode"] == "full"
             and (mb.get("vlmdpo") or {}).get("mfu") is not None]
    best = max(mfus, default=None)
    rows.append(f"| Qwen2-VL-2B full: MFU >= {QWEN_MFU:.0%} | qwen2vl-2b full {best[1] if best else ''} | "
                f"{pct(best[0]) if best else '-'} | {verdict(None if best is None else best[0] >= QWEN_MFU)} |")
    return rows


def unfinished(speed: dict) -> list[str]:
    out = []
    for r in speed.get("records", []):
        if r.get("status") != "ok":
            out.append(f"- {r.get('model')} {r.get('mode')} b{r.get('batch')} {r.get('side_name')}: {r.get('status')} "
                       f"({str(r.get('error'))[-200:].strip()})")
    return out


def render(folder: Path) -> str:
    load = lambda n: json.loads((folder / n).read_text()) if (folder / n).exists() else {}  # noqa: E731
    corr, speed = load("correctness.json"), load("speed.json")
    dev = speed.get("device") or corr.get("device") or {}
    lines = ["# gpu_check results", ""]
    lines += [f"- date (UTC): {speed.get('date_utc') or corr.get('date_utc', '-')}",
              f"- device: {dev.get('name', '-')} ({dev.get('type', '-')})",
              f"- bf16 matrix product measured: {num((corr.get('device') or {}).get('bf16_matmul_tflops_measured'), 0)} TFLOP/s "
              "(MFU below is against the datasheet dense bf16 peak)",
              f"- versions: {', '.join(f'{k} {v}' for k, v in (speed.get('versions') or corr.get('versions') or {}).items())}",
              f"- speed command: `{speed.get('command', '-')}`", ""]
    lines += ["## Correctness: fast layouts vs plain, relative error against a float32 reference", ""]
    if corr:
        c = corr.get("counts") or {}
        lines += [f"dtype {corr.get('dtype')}; {c.get('pass', '?')} pass, {c.get('FAIL', '?')} FAIL, {c.get('skipped', '?')} skipped "
                  f"(cases not reached by the deadline count as skipped)", "", corr.get("table_md", "(did not finish)"), ""]
    else:
        lines += ["not run", ""]
    lines += ["## Targets", ""]
    if dev.get("type") == "cpu":
        lines += ["(A CPU run: tiny models, peak memory is the process's RSS; the targets are for the GPU run, "
                  "the verdicts here only show that the report works.)", ""]
    lines += targets(speed) + [""]
    lines += ["## Same batch, same settings", "", speed.get("table_md", "not run"), ""]
    if speed.get("max_batch_md"):
        lines += ["## Largest batch that fits (each side)", "", speed["max_batch_md"], ""]
    prof = speed.get("profile") or {}
    if prof:
        where = "trace `trace.json.gz`, top operators `profile_top.txt`" if prof.get("status") == "ok" else \
            f"{prof.get('status')}: {str(prof.get('error'))[-200:]}"
        lines += ["## Profile", "", f"vlmdpo {prof.get('model')} {prof.get('mode')} b{prof.get('batch')} (lowest ratio to TRL): "
                  f"{where}", ""]
    left = unfinished(speed)
    if left:
        lines += ["## Runs that did not finish", ""] + left + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    folder = Path((argv or sys.argv[1:] or ["."])[0])
    text = render(folder)
    (folder / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
