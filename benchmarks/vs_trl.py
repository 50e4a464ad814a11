#!/usr/bin/env python
"""Side-by-side DPO training throughput: TRL's DPOTrainer vs vlmdpo, in one invocation.

Same model architecture (random weights; real sizes: smolvlm-256m, qwen2vl-2b; CPU: smolvlm-tiny,
qwen2vl-tiny), same synthetic pairs (one image per pair; sizes and lengths on the command line),
same settings (dtype, gradient checkpointing, LoRA r/alpha/dropout on all linear layers or full
fine-tuning, same batch, lr, beta, grad clip 1.0). Each measurement runs in its own process
(clean peak memory), alternating TRL / vlmdpo / vlmdpo / TRL ... over --rounds. Prints pairs/s,
tokens/s, peak memory and model FLOPs utilization for both and the ratios, writes JSON, and with
--find-max-batch finds the largest per-device batch that fits for each.

CPU (tiny models, a few minutes):
    python benchmarks/vs_trl.py --models smolvlm-tiny,qwen2vl-tiny --modes lora,full \
        --batch 2 --steps 3 --rounds 2 --prompt-tokens 32 --resp-tokens 64 --out benchmarks/results/cpu_tiny.json
GPU (as the reference baseline was measured):
    python benchmarks/vs_trl.py --models smolvlm-256m,qwen2vl-2b --modes lora,full --batch 8 --bf16 --grad-ckpt \
        --steps 30 --warmup 3 --rounds 2 --resp-tokens 128 --find-max-batch --out benchmarks/results/gpu.json

Token counts: prompt (image tokens included) once per pair + chosen + rejected, padding excluded,
per framework's own tokenization (both use the same processor and chat template).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import add_run_args, device_info, is_oom, now_utc, versions  # noqa: E402

SIDES = ("trl", "vlmdpo")
# Extra sides for ablations: the vlmdpo step with every fast path off (plain layout, full logits,
# image per row), and with reference log-probs precomputed.
VARIANTS = {"vlmdpo-plain": ("vlmdpo", {"fast": "none"}), "vlmdpo-refcache": ("vlmdpo", {"ref-cache": True})}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap)
    ap.add_argument("--models", default="smolvlm-tiny,qwen2vl-tiny")
    ap.add_argument("--modes", default="lora,full")
    ap.add_argument("--rounds", type=int, default=2, help="alternating TRL/vlmdpo measurements per configuration")
    ap.add_argument("--also", default="", help=f"extra sides measured in the same rounds: {', '.join(VARIANTS)}")
    ap.add_argument("--find-max-batch", action="store_true", help="search the largest batch that fits, per side")
    ap.add_argument("--max-batch-limit", type=int, default=256)
    ap.add_argument("--cpu-mem-limit-gib", type=float, default=None,
                    help="on CPU, a batch 'fits' when peak RSS stays under this (no OOM on CPU otherwise)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)")
    ap.add_argument("--run-timeout", type=int, default=1800, help="seconds per measurement process")
    ap.add_argument("--out", default=None, help="JSON file for all records and the summary")
    ap.add_argument("--worker", choices=SIDES, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ------------------------------------------------------------------------------ one measurement
def worker(a) -> int:
    import torch

    from bench_data import make_rows
    from trl_side import image_size

    if a.threads:
        torch.set_num_threads(a.threads)
    rec = {"side": a.worker, "model": a.model, "mode": a.mode, "batch": a.batch, "started_utc": now_utc()}
    try:
        n = a.batch * (a.warmup + a.steps)
        rows = make_rows(n, image_size=image_size(a), prompt_tokens=a.prompt_tokens, chosen_tokens=a.resp_tokens,
                         rejected_tokens=a.rejected_tokens, seed=a.seed)
        if a.worker == "trl":
            import trl_side as side
        else:
            import vlmdpo_side as side
        rec["results"] = side.run(a, rows)
        rec["status"] = "ok"
    except BaseException as e:  # noqa: BLE001 - record failures (OOM included) for the parent
        rec["status"] = "oom" if is_oom(e) else "error"
        rec["error"] = f"{type(e).__name__}: {e}"[:3000]
        rec["traceback"] = traceback.format_exc()[-4000:]
    Path(a.worker_out).write_text(json.dumps(rec, indent=1))
    return 0


def spawn(argv: list[str], side: str, overrides: dict, timeout: int) -> dict:
    args = list(argv)
    if side in VARIANTS:
        side, extra = VARIANTS[side]
        overrides = {**overrides, **extra}
    for k, v in overrides.items():
        args += [f"--{k}"] if v is True else [f"--{k}", str(v)]
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, str(Path(__file__).resolve()), *args, "--worker", side, "--worker-out", out]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rec = json.loads(Path(out).read_text()) if Path(out).stat().st_size else {}
        if not rec:
            rec = {"status": "error", "error": (proc.stderr or "")[-3000:]}
    except subprocess.TimeoutExpired:
        rec = {"status": "error", "error": f"timed out after {timeout}s"}
    finally:
        Path(out).unlink(missing_ok=True)
    rec["process_s"] = round(time.perf_counter() - t, 2)
    return rec


def _base_argv(a) -> list[str]:
    """The run arguments to pass to every measurement process (models/modes/batch set per run)."""
    skip = {"models", "modes", "rounds", "also", "find_max_batch", "max_batch_limit", "cpu_mem_limit_gib", "run_timeout",
            "out", "worker", "worker_out", "model", "mode", "batch"}
    argv = []
    for k, v in vars(a).items():
        if k in skip or v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag, str(v)]
    return argv


def fits(rec: dict, limit: float | None) -> bool:
    if rec.get("status") != "ok":
        return False
    return limit is None or rec["results"]["peak_mem_gib"] <= limit


def max_batch(a, argv, side, model, mode) -> dict:
    """Largest batch that fits: double from --batch, then bisect (short runs: 1 warm-up + 1 step)."""
    probes = {}

    def probe(b: int) -> bool:
        rec = spawn(argv, side, {"model": model, "mode": mode, "batch": b, "steps": 1, "warmup": 1}, a.run_timeout)
        ok = fits(rec, a.cpu_mem_limit_gib)
        probes[b] = rec.get("status") if rec.get("status") != "ok" else \
            f"ran, peak {rec['results']['peak_mem_gib']} GiB" + ("" if ok else " (over --cpu-mem-limit-gib)")
        print(f"    max-batch {side} b={b}: {probes[b]}", flush=True)
        return ok

    lo, hi = 0, None
    b = a.batch
    while b <= a.max_batch_limit:
        if probe(b):
            lo, b = b, b * 2
        else:
            hi = b
            break
    if hi is not None:
        while hi - lo > 1 and lo > 0:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if probe(mid) else (lo, mid)
    return {"largest_batch": lo or None, "limit_reached": hi is None, "probes": probes}


# ------------------------------------------------------------------------------ summary
def aggregate(recs: list[dict]) -> dict | None:
    ok = [r["results"] for r in recs if r.get("status") == "ok"]
    if not ok:
        return None
    med = lambda k: statistics.median(x[k] for x in ok)  # noqa: E731
    mfu = [x["mfu"] for x in ok if x.get("mfu") is not None]
    cpu = [x["pairs_per_cpu_s"] for x in ok if x.get("pairs_per_cpu_s")]
    return {"runs": len(ok), "pairs_per_s": med("pairs_per_s"), "tokens_per_s": med("tokens_per_s"),
            "pairs_per_cpu_s": statistics.median(cpu) if cpu else None,
            "peak_mem_gib": max(x["peak_mem_gib"] for x in ok), "mfu": statistics.median(mfu) if mfu else None,
            "achieved_model_tflops": med("achieved_model_tflops"), "per_pair": ok[0]["per_pair"],
            "trainable": ok[0]["params"]["trainable"], "first_losses": ok[0]["losses"][:3]}


def table(summary: list[dict]) -> str:
    head = ("| model | mode | batch | TRL pairs/s | vlmdpo pairs/s | ratio | ratio (CPU s) | TRL tok/s | vlmdpo tok/s | "
            "TRL peak GiB | vlmdpo peak GiB | TRL MFU | vlmdpo MFU | max batch TRL / vlmdpo |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    f = lambda x, n=2: "-" if x is None else f"{x:,.{n}f}"  # noqa: E731
    for s in summary:
        t, v = s.get("trl") or {}, s.get("vlmdpo") or {}
        mb = s.get("max_batch") or {}
        mbs = " / ".join(str((mb.get(k) or {}).get("largest_batch", "-")) for k in SIDES) if mb else "-"
        pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        lines.append(f"| {s['model']} | {s['mode']} | {s['batch']} | {f(t.get('pairs_per_s'))} | "
                     f"{f(v.get('pairs_per_s'))} | {f(s.get('ratio_pairs_per_s'))}x | {f(s.get('ratio_pairs_per_cpu_s'))}x | "
                     f"{f(t.get('tokens_per_s'), 0)} | "
                     f"{f(v.get('tokens_per_s'), 0)} | {f(t.get('peak_mem_gib'))} | {f(v.get('peak_mem_gib'))} | "
                     f"{pct(t.get('mfu'))} | {pct(v.get('mfu'))} | {mbs} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.worker:
        return worker(a)
    import torch

    argv = _base_argv(a)
    command = " ".join(shlex.quote(x) for x in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    report = {"command": command, "date_utc": now_utc(), "device": device_info(torch), "versions": versions(),
              "records": [], "summary": []}
    for model in a.models.split(","):
        for mode in a.modes.split(","):
            sides = SIDES + tuple(x for x in a.also.split(",") if x)
            unknown = set(sides) - set(SIDES) - set(VARIANTS)
            if unknown:
                raise SystemExit(f"unknown --also side(s) {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
            recs = {s: [] for s in sides}
            for r in range(a.rounds):
                for side in (sides if r % 2 == 0 else sides[::-1]):
                    rec = spawn(argv, side, {"model": model, "mode": mode, "batch": a.batch}, a.run_timeout)
                    recs[side].append(rec)
                    report["records"].append(rec)
                    res = rec.get("results") or {}
                    state = f"{res['pairs_per_s']:.3f} pairs/s, peak {res['peak_mem_gib']} GiB" if rec.get(
                        "status") == "ok" else f"{rec.get('status')}: {str(rec.get('error'))[-300:]}"
                    print(f"[{model} {mode} b={a.batch} round {r}] {side}: {state}", flush=True)
            s = {"model": model, "mode": mode, "batch": a.batch, **{side: aggregate(recs[side]) for side in sides}}
            for extra in sides[2:]:
                if s[extra] and s["trl"]:
                    s[f"ratio_pairs_per_s_{extra}"] = s[extra]["pairs_per_s"] / s["trl"]["pairs_per_s"]
            if s["trl"] and s["vlmdpo"]:
                s["ratio_pairs_per_s"] = s["vlmdpo"]["pairs_per_s"] / s["trl"]["pairs_per_s"]
                s["ratio_tokens_per_s"] = s["vlmdpo"]["tokens_per_s"] / s["trl"]["tokens_per_s"]
                s["ratio_peak_mem"] = s["vlmdpo"]["peak_mem_gib"] / s["trl"]["peak_mem_gib"]
                if s["trl"]["pairs_per_cpu_s"] and s["vlmdpo"]["pairs_per_cpu_s"]:
                    s["ratio_pairs_per_cpu_s"] = s["vlmdpo"]["pairs_per_cpu_s"] / s["trl"]["pairs_per_cpu_s"]
            if a.find_max_batch:
                s["max_batch"] = {side: max_batch(a, argv, side, model, mode) for side in SIDES}
            report["summary"].append(s)
            if a.out:
                _write(a.out, report)
    print()
    print(f"device: {report['device']['name']} | " + " | ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print(table(report["summary"]))
    for s in report["summary"]:
        for k, v in s.items():
            if k.startswith("ratio_pairs_per_s_"):
                print(f"{s['model']} {s['mode']}: {k.removeprefix('ratio_pairs_per_s_')} / TRL pairs/s = {v:.2f}x "
                      f"({s[k.removeprefix('ratio_pairs_per_s_')]['pairs_per_s']:.3f} pairs/s)")
    report["table_md"] = table(report["summary"])
    if a.out:
        _write(a.out, report)
        print(f"wrote {a.out}")
    bad = [s for s in report["summary"] if not (s["trl"] and s["vlmdpo"])]
    return 1 if bad else 0


def _write(path: str, report: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=1, default=str) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
