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
Explicit configurations, time-boxed phases and a profile (what benchmarks/gpu_check.sh runs):
    python benchmarks/vs_trl.py --configs qwen2vl-2b:full:16,smolvlm-256m:lora:8 --bf16 --grad-ckpt \
        --find-max-batch --deadline $(( $(date +%s) + 300 )) --profile-dir $OUT --out $OUT/speed.json
Smoke test of all of it on CPU with tiny models (a couple of minutes): --cpu-smoke.

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

from bench_common import add_run_args, device_info, is_oom, now_utc, versions, write_json  # noqa: E402
from bench_tables import max_batch_table, pct, table  # noqa: E402

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
    ap.add_argument("--out", default=None, help="JSON file for all records and the summary (rewritten after each run)")
    ap.add_argument("--configs", default=None,
                    help="model:mode:batch,... measured in this order (instead of --models x --modes at --batch)")
    ap.add_argument("--max-batch-for", default=None,
                    help="model:mode,... to search the largest batch for (default: each model:mode measured)")
    ap.add_argument("--max-batch-budget-s", type=float, default=None, help="seconds per largest-batch search")
    ap.add_argument("--probe-steps", type=int, default=2, help="timed steps of a largest-batch probe (after 1 warm-up)")
    ap.add_argument("--profile-dir", default=None,
                    help="profile the slowest vlmdpo configuration (lowest ratio to TRL) into trace.json.gz + profile_top.txt here")
    ap.add_argument("--speed-deadline", type=float, default=None, help="epoch s: no same-batch run starts after it")
    ap.add_argument("--profile-deadline", type=float, default=None, help="epoch s: the profile run ends by then")
    ap.add_argument("--deadline", type=float, default=None, help="epoch s: nothing runs past it (the largest-batch search last)")
    ap.add_argument("--min-run-s", type=float, default=20, help="a run starts only with this many seconds before its deadline")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="every phase on CPU with tiny models, in a couple of minutes (explicit flags still win)")
    ap.add_argument("--worker", choices=SIDES, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.cpu_smoke:
        ap.set_defaults(**CPU_SMOKE)
        a = ap.parse_args(argv)
    return a


PROFILE_STEPS = 2  # after 1 warm-up: enough to see a step's shape, small enough for a trace to come back

# Small enough for a shared 2-core machine: both families, both modes, every side and phase once.
CPU_SMOKE = dict(configs="smolvlm-tiny:lora:2,qwen2vl-tiny:full:2", steps=1, warmup=1, rounds=1, prompt_tokens=16,
                 resp_tokens=16, threads=1, also="vlmdpo-refcache", find_max_batch=True, max_batch_for="smolvlm-tiny:lora",
                 max_batch_limit=4, cpu_mem_limit_gib=6.0, probe_steps=1, min_run_s=5)


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


class Budget:
    """Deadlines (epoch seconds) of the phases: a run starts only with --min-run-s left, and its
    process is stopped at its phase's deadline (and at --run-timeout)."""

    def __init__(self, a):
        self.a = a

    def timeout(self, deadline: float | None) -> int | None:
        """Seconds the next run may take, or None when too little is left to start one."""
        ends = [d for d in (deadline, self.a.deadline) if d]
        left = min(ends) - time.time() if ends else float(self.a.run_timeout)
        return int(min(left, self.a.run_timeout)) if left >= self.a.min_run_s else None


def spawn(argv: list[str], side: str, overrides: dict, timeout: int | None) -> dict:
    if timeout is None:
        return {"status": "skipped", "error": "phase deadline reached before this run could start", "process_s": 0}
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
            "out", "worker", "worker_out", "model", "mode", "batch", "configs", "max_batch_for", "max_batch_budget_s",
            "probe_steps", "profile_dir", "speed_deadline", "profile_deadline", "deadline", "min_run_s", "cpu_smoke",
            "profile_out"}
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


def max_batch(a, argv, budget: Budget, side, model, mode, known: dict[int, dict], start: int, share: int) -> dict:
    """Largest batch that fits: double from the largest batch already measured to fit (`known`:
    batch -> its same-batch record), then bisect, until an out-of-memory, --max-batch-limit, the
    search's own budget or its `share` of the time left (1 / searches left). Probes are short
    runs (1 warm-up + --probe-steps)."""
    # its own budget, and its share of the time left before --deadline (so one side cannot starve the next)
    ends = [time.time() + x for x in (a.max_batch_budget_s, (a.deadline - time.time()) / share if a.deadline else None) if x]
    t_end = min(ends) if ends else None
    probes: dict[int, dict] = {}
    stop = "limit"

    def note(b: int, rec: dict, probed: bool) -> bool:
        ok = fits(rec, a.cpu_mem_limit_gib)
        res = rec.get("results") or {}
        probes[b] = {"status": rec.get("status"), "fits": ok, "probed": probed, "pairs_per_s": res.get("pairs_per_s"),
                     "peak_mem_gib": res.get("peak_mem_gib"), "mfu": res.get("mfu")}
        if probed:
            print(f"    max-batch {model} {mode} {side} b={b}: {rec.get('status')} {res.get('pairs_per_s') or ''} "
                  f"pairs/s, peak {res.get('peak_mem_gib')} GiB" + ("" if ok or rec.get("status") != "ok" else
                                                                    " (over --cpu-mem-limit-gib)"), flush=True)
        return ok

    def probe(b: int) -> bool | None:
        timeout = budget.timeout(t_end)
        if timeout is None:
            return None
        rec = spawn(argv, side, {"model": model, "mode": mode, "batch": b, "steps": a.probe_steps, "warmup": 1}, timeout)
        if rec.get("status") == "error" and "timed out" in str(rec.get("error")):
            return None  # out of time, not out of memory
        return note(b, rec, True)

    lo, hi = 0, None
    for b, rec in sorted(known.items()):
        if note(b, rec, False):
            lo = max(lo, b)
        elif rec.get("status") == "oom":
            hi = b if hi is None else min(hi, b)
    b = lo * 2 if lo else start
    while hi is None and b <= a.max_batch_limit:
        ok = probe(b)
        if ok is None:
            stop = "time"
            break
        lo, hi, b = (b, None, b * 2) if ok else (lo, b, b)
    if hi is not None:
        failed = probes.get(hi) or {"status": "oom"}
        stop = {"oom": "out of memory", "ok": "over --cpu-mem-limit-gib"}.get(failed["status"], f"run {failed['status']}")
        while hi - lo > 1 and lo > 0:
            mid = (lo + hi) // 2
            ok = probe(mid)
            if ok is None:
                stop += " (bisection cut by time)"
                break
            lo, hi = (mid, hi) if ok else (lo, mid)
    at = probes.get(lo) or {}
    fitting = [p["pairs_per_s"] for p in probes.values() if p["fits"] and p["pairs_per_s"]]
    return {"largest_batch": lo or None, "stopped_by": stop, "pairs_per_s": at.get("pairs_per_s"),
            "peak_mem_gib": at.get("peak_mem_gib"), "mfu": at.get("mfu"), "best_pairs_per_s": max(fitting, default=None),
            "probes": probes}


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


# ------------------------------------------------------------------------------ phases
def configs(a) -> list[tuple[str, str, int]]:
    if a.configs:
        out = []
        for item in a.configs.split(","):
            parts = item.split(":")
            if len(parts) != 3 or not parts[2].isdigit() or parts[1] not in ("lora", "full"):
                raise SystemExit(f"--configs entry {item!r}: write model:mode:batch, e.g. qwen2vl-2b:full:16")
            out.append((parts[0], parts[1], int(parts[2])))
        return out
    return [(m, mode, a.batch) for m in a.models.split(",") for mode in a.modes.split(",")]


def same_batch(a, argv, budget: Budget, report: dict, model: str, mode: str, batch: int, sides: tuple) -> dict:
    recs = {s: [] for s in sides}
    for r in range(a.rounds):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            rec = spawn(argv, side, {"model": model, "mode": mode, "batch": batch}, budget.timeout(a.speed_deadline))
            rec.update(side_name=side, model=model, mode=mode, batch=batch)
            recs[side].append(rec)
            report["records"].append(rec)
            res = rec.get("results") or {}
            state = f"{res['pairs_per_s']:.3f} pairs/s, peak {res['peak_mem_gib']} GiB, MFU {pct(res.get('mfu'))}" \
                if rec.get("status") == "ok" else f"{rec.get('status')}: {str(rec.get('error'))[-300:]}"
            print(f"[{model} {mode} b={batch} round {r}] {side}: {state}", flush=True)
            write_json(a.out, report)
    s = {"model": model, "mode": mode, "batch": batch, **{side: aggregate(recs[side]) for side in sides}}
    for extra in sides[2:]:
        if s[extra] and s["trl"]:
            s[f"ratio_pairs_per_s_{extra}"] = s[extra]["pairs_per_s"] / s["trl"]["pairs_per_s"]
    if s["trl"] and s["vlmdpo"]:
        s["ratio_pairs_per_s"] = s["vlmdpo"]["pairs_per_s"] / s["trl"]["pairs_per_s"]
        s["ratio_tokens_per_s"] = s["vlmdpo"]["tokens_per_s"] / s["trl"]["tokens_per_s"]
        s["ratio_peak_mem"] = s["vlmdpo"]["peak_mem_gib"] / s["trl"]["peak_mem_gib"]
        if s["trl"]["pairs_per_cpu_s"] and s["vlmdpo"]["pairs_per_cpu_s"]:
            s["ratio_pairs_per_cpu_s"] = s["vlmdpo"]["pairs_per_cpu_s"] / s["trl"]["pairs_per_cpu_s"]
    return s


def profile_slowest(a, argv, budget: Budget, summary: list[dict]) -> dict:
    """One short vlmdpo run under torch.profiler, for the configuration with the lowest
    vlmdpo / TRL ratio (lowest MFU, then lowest pairs/s, where TRL has no number)."""
    ran = [s for s in summary if s.get("vlmdpo")]
    if not ran:
        return {"status": "skipped", "error": "no vlmdpo configuration ran"}
    key = lambda s: (s.get("ratio_pairs_per_s") or float("inf"), s["vlmdpo"].get("mfu") or 0, s["vlmdpo"]["pairs_per_s"])  # noqa: E731
    s = min(ran, key=key)
    Path(a.profile_dir).mkdir(parents=True, exist_ok=True)
    trace = str(Path(a.profile_dir) / "trace.json.gz")
    rec = spawn(argv, "vlmdpo", {"model": s["model"], "mode": s["mode"], "batch": s["batch"], "steps": PROFILE_STEPS,
                                 "warmup": 1, "profile-out": trace}, budget.timeout(a.profile_deadline))
    out = {"model": s["model"], "mode": s["mode"], "batch": s["batch"], "status": rec.get("status"),
           "error": rec.get("error"), "trace": trace if rec.get("status") == "ok" else None}
    top = ((rec.get("results") or {}).get("profile") or {}).get("top_ops")
    if top:
        (Path(a.profile_dir) / "profile_top.txt").write_text(
            f"vlmdpo {s['model']} {s['mode']} batch {s['batch']}: top operators over {PROFILE_STEPS} timed steps\n{top}\n")
    print(f"profile of vlmdpo {s['model']} {s['mode']} b={s['batch']}: {rec.get('status')} {rec.get('error') or trace}",
          flush=True)
    return out


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.worker:
        return worker(a)
    import torch

    argv = _base_argv(a)
    budget = Budget(a)
    command = " ".join(shlex.quote(x) for x in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    report = {"command": command, "date_utc": now_utc(), "device": device_info(torch), "versions": versions(),
              "records": [], "summary": [], "max_batch": [], "profile": None}
    sides = SIDES + tuple(x for x in a.also.split(",") if x)
    unknown = set(sides) - set(SIDES) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown --also side(s) {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    todo = configs(a)
    for model, mode, batch in todo:
        report["summary"].append(same_batch(a, argv, budget, report, model, mode, batch, sides))
        report["table_md"] = table(report["summary"])
        write_json(a.out, report)
    if a.profile_dir:
        report["profile"] = profile_slowest(a, argv, budget, report["summary"])
        write_json(a.out, report)
    if a.find_max_batch:
        wanted = a.max_batch_for.split(",") if a.max_batch_for else list(dict.fromkeys(f"{m}:{mo}" for m, mo, _ in todo))
        for item in wanted:
            model, mode = item.split(":")
            search = {"model": model, "mode": mode}
            for i, side in enumerate(SIDES):
                share = len(SIDES) * (len(wanted) - wanted.index(item)) - i  # searches left, this one included
                known = {r["batch"]: r for r in report["records"]
                         if (r["model"], r["mode"], r["side_name"]) == (model, mode, side) and r["status"] != "skipped"}
                start = min([b for m, mo, b in todo if (m, mo) == (model, mode)], default=a.batch)
                search[side] = max_batch(a, argv, budget, side, model, mode, known, start, share)
                write_json(a.out, report | {"max_batch": report["max_batch"] + [search]})
            t, v = search["trl"], search["vlmdpo"]
            if t.get("pairs_per_s") and v.get("pairs_per_s"):
                search["ratio_best_vs_best"] = v["pairs_per_s"] / t["pairs_per_s"]
            report["max_batch"].append(search)
        report["max_batch_md"] = max_batch_table(report["max_batch"])
    print()
    print(f"device: {report['device']['name']} | " + " | ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print(table(report["summary"]))
    if report["max_batch"]:
        print(report["max_batch_md"])
    write_json(a.out, report)
    if a.out:
        print(f"wrote {a.out}")
    bad = [s for s in report["summary"] if not (s["trl"] and s["vlmdpo"])]
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
