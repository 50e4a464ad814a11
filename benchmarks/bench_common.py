"""What both sides of vs_trl.py share: arguments, timing, memory, token counts, FLOPs."""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import os
import platform
import resource
import time

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


def model_flops_per_pair(cfg: dict, prompt: float, chosen: float, rejected: float, image_patches: float) -> float:
    """Model FLOPs of one pair for one DPO step: policy fwd+bwd (3x) + reference fwd (1x) of the
    standard computation, [prompt+chosen] and [prompt+rejected] with full logits at completion
    positions. The same count serves both frameworks, so MFU ratios equal throughput ratios;
    work a framework skips (a repeated prompt) is not credited.

    cfg: {"n_lm": non-embedding LM params, "d": hidden, "layers": n, "vocab": V, "n_vision": vision params}
    """
    lm_tokens = 2 * prompt + chosen + rejected
    attn = 2 * cfg["layers"] * cfg["d"] * ((prompt + chosen) ** 2 + (prompt + rejected) ** 2)
    fwd = 2 * cfg["n_lm"] * lm_tokens + attn + 2 * cfg["d"] * cfg["vocab"] * (chosen + rejected)
    fwd += 2 * 2 * cfg["n_vision"] * image_patches  # the image is part of both sequences
    return 4 * fwd


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
              cpu_s: list[float] | None = None) -> dict:
    """Throughput over the timed steps; `batches` holds per-step token counts, `cpu_s` the
    process CPU seconds of each timed step."""
    timed = sum(step_s)
    pairs = sum(b["pairs"] for b in batches)
    tok = {k: sum(b[k] for b in batches) for k in ("prompt_tokens", "chosen_tokens", "rejected_tokens",
                                                     "image_tokens", "processed_tokens", "padded_tokens")}
    uniq = tok["prompt_tokens"] + tok["chosen_tokens"] + tok["rejected_tokens"]
    per = {k: tok[k] / pairs for k in tok}
    patches = sum(b.get("image_patches", 0) for b in batches) / pairs
    flops = model_flops_per_pair(flops_cfg, per["prompt_tokens"], per["chosen_tokens"], per["rejected_tokens"], patches)
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
