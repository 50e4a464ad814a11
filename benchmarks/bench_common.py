"""What both sides of vs_trl.py share: arguments, timing, memory, token counts, FLOPs."""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import resource
import time
from pathlib import Path

# Dense bf16 tensor-core peaks (no sparsity), for model FLOPs utilization; --peak-tflops overrides.
PEAK_BF16_TFLOPS = {"H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                    "H200": 989.4, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0}


def add_run_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="smolvlm-tiny")
    ap.add_argument("--mode", choices=["lora", "full"], default="lora")
    ap.add_argument("--batch", type=int, default=2, help="pairs per optimizer step (no accumulation)")
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--image-size", type=int, default=None, help="square image side (default: per model)")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--resp-tokens", type=int, default=128, help="chosen length in tokens")
    ap.add_argument("--rejected-tokens", type=int, default=None, help="rejected length (default: = chosen)")
    ap.add_argument("--bf16", action="store_true", help="bf16 weights + bf16 autocast (CUDA); default fp32")
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing")
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=int, default=32)
    ap.add_argument("--lora-dropout", type=float, default=0.05)
    ap.add_argument("--lora-modules", choices=["all", "language_model"], default="all",
                    help="vlmdpo side: 'all' = LoRA on every linear layer, as TRL's peft all-linear does")
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ref-cache", action="store_true",
                    help="vlmdpo side: precompute reference log-probs before the timed steps (TRL refuses this "
                         "for image data); the precompute time is reported separately")
    ap.add_argument("--fast", default="all", help="vlmdpo side: 'all' fast paths, or 'none' (plain path)")
    ap.add_argument("--profile-out", default=None,
                    help="vlmdpo side: torch profiler over the timed steps -> this .json.gz trace (+ a .txt of the top ops)")


def device_info(torch) -> dict:
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return {"type": "cuda", "name": torch.cuda.get_device_name(0), "total_mem_gib": round(p.total_memory / 2**30, 2),
                "n_gpus": torch.cuda.device_count()}
    name = platform.processor() or "cpu"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return {"type": "cpu", "name": name, "threads": torch.get_num_threads(), "cpus": os.cpu_count()}


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "vlmdpo"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Clock:
    """Wall time with CUDA synchronisation, and peak memory since the last reset."""

    def __init__(self, torch):
        self.torch = torch
        self.cuda = torch.cuda.is_available()

    def now(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
        return time.perf_counter()

    @staticmethod
    def cpu() -> float:
        """CPU seconds of this process (all threads): on a shared CPU machine, other tenants
        stretch wall time far more than they change the work a run does."""
        return time.process_time()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        if self.cuda:
            return round(self.torch.cuda.max_memory_allocated() / 2**30, 3)
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30, 3)  # peak RSS (Linux KiB)


def is_oom(e: BaseException) -> bool:
    return "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"


def model_flops_per_pair(cfg: dict, prompt: float, chosen: float, rejected: float, image_patches: float, *,
                         full: bool = True, ref_in_step: bool = True) -> float:
    """Model FLOPs of one pair for one DPO step, over the standard computation: [prompt+chosen]
    and [prompt+rejected] (the image in both), full logits at completion positions.

    fwd = 2 * N_lm * tokens + 2 * layers * d * (L_c^2 + L_r^2) (attention scores + values, causal
          half of 4*d*L^2) + 2 * d * V * completion tokens (head) + 2 * 2 * N_vision * patches
    step = policy fwd + backward + reference fwd, where backward = 2 x fwd when every weight
          trains (input and weight gradients: the usual 6 * N * tokens) and 1 x fwd for LoRA
          (input gradients only; adapter weight gradients are negligible); the reference forward
          is left out when its log-probs were precomputed (`ref_in_step=False`).
    The same count serves both frameworks: work a framework skips (a repeated prompt) is not
    credited, and recomputation under gradient checkpointing is not counted either.

    cfg: {"n_lm": non-embedding LM params, "d": hidden, "layers": n, "vocab": V, "n_vision": vision params}
    """
    lm_tokens = 2 * prompt + chosen + rejected
    attn = 2 * cfg["layers"] * cfg["d"] * ((prompt + chosen) ** 2 + (prompt + rejected) ** 2)
    fwd = 2 * cfg["n_lm"] * lm_tokens + attn + 2 * cfg["d"] * cfg["vocab"] * (chosen + rejected)
    fwd += 2 * 2 * cfg["n_vision"] * image_patches  # the image is part of both sequences
    return ((3 if full else 2) + (1 if ref_in_step else 0)) * fwd


def flops_config(model, split: dict) -> dict:
    text = model.config.get_text_config()
    return {"n_lm": split["lm_nonembedding"], "d": text.hidden_size, "layers": text.num_hidden_layers, "vocab": text.vocab_size,
            "n_vision": split["vision"]}


def peak_tflops(device: dict, override: float | None) -> float | None:
    if override:
        return override
    if device.get("type") != "cuda":
        return None
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device["name"]:
            return value
    return None


def summarize(step_s: list[float], batches: list[dict], clock: Clock, *, flops_cfg: dict, peak: float | None,
              cpu_s: list[float] | None = None, full: bool = True, ref_in_step: bool = True) -> dict:
    """Throughput over the timed steps; `batches` holds per-step token counts, `cpu_s` the
    process CPU seconds of each timed step."""
    timed = sum(step_s)
    pairs = sum(b["pairs"] for b in batches)
    tok = {k: sum(b[k] for b in batches) for k in ("prompt_tokens", "chosen_tokens", "rejected_tokens",
                                                     "image_tokens", "processed_tokens", "padded_tokens")}
    uniq = tok["prompt_tokens"] + tok["chosen_tokens"] + tok["rejected_tokens"]
    per = {k: tok[k] / pairs for k in tok}
    patches = sum(b.get("image_patches", 0) for b in batches) / pairs
    flops = model_flops_per_pair(flops_cfg, per["prompt_tokens"], per["chosen_tokens"], per["rejected_tokens"], patches,
                                 full=full, ref_in_step=ref_in_step)
    achieved = flops * pairs / timed
    return {
        "timed_s": round(timed, 4), "pairs_per_s": pairs / timed, "tokens_per_s": uniq / timed,
        "processed_tokens_per_s": tok["processed_tokens"] / timed, "padded_tokens_per_s": tok["padded_tokens"] / timed,
        "step_s_mean": timed / len(step_s), "step_s_median": sorted(step_s)[len(step_s) // 2],
        "per_pair": {k.replace("_tokens", ""): round(v, 2) for k, v in per.items()} | {"image_patches": patches},
        "model_tflops_per_pair": flops / 1e12, "achieved_model_tflops": achieved / 1e12,
        "mfu": (achieved / (peak * 1e12)) if peak else None,
        "peak_mem_gib": clock.peak_gib(),
        "cpu_s": round(sum(cpu_s), 4) if cpu_s else None,
        "pairs_per_cpu_s": (pairs / sum(cpu_s)) if cpu_s else None,
    }


def matmul_tflops(torch, n: int = 8192, reps: int = 10) -> float | None:
    """A bf16 n x n x n matrix product's rate on random data (CUDA events, after warm-up): the
    device's practical ceiling, to read MFU against (MFU itself uses the datasheet peak)."""
    if not torch.cuda.is_available():
        return None
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return round(2 * n**3 * reps / (start.elapsed_time(end) / 1e3) / 1e12, 1)


def write_json(path: str | None, obj: dict) -> None:
    """Write through a temporary file: a reader, or a kill at a deadline, never sees half a file."""
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    tmp.replace(path)
