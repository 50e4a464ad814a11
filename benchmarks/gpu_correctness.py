#!/usr/bin/env python
"""The fast layout against the plain one, per family, in bf16 (CUDA) with sdpa and flex_attention.

For each tiny family (`vlmdpo.model.tiny`, random weights) and attention kernel: log-probs and
gradients of the plain path (`batching.plain` + `model.logps`) and of the fast layouts (shared
prefix; padding-free packing) in the test dtype, each measured against a float32 eager plain
reference with the same weights, as ||x - ref|| / ||ref|| (log-probs of every completion; each
parameter's gradient). A fast layout passes when each error is within the dtype's tolerance or
within 3x the plain path's own error in that dtype (bf16 rounding moves both), and is finite.
Then a few DPO training steps (policy + frozen reference, fast layout, AdamW) must keep the loss,
gradients and weights finite.

    python benchmarks/gpu_correctness.py --out $OUT/correctness.json            # CUDA, bf16, all families
    python benchmarks/gpu_correctness.py --device cpu --families idefics3,qwen2_vl --attn sdpa

Results are rewritten to --out after each case, so a run stopped at --deadline keeps what it did.
flex_attention is recorded as skipped where transformers does not offer it (the Qwen families) and
on CPU (no backward there; inductor's CPU kernel for it did not compile with torch 2.14).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import device_info, matmul_tflops, now_utc, versions, write_json  # noqa: E402

# Relative-error tolerances of a fast layout against the float32 reference, per test dtype
# (gradients: per parameter).
TOL = {"bfloat16": {"logps": 1e-2, "grads": 5e-2}, "float32": {"logps": 1e-5, "grads": 1e-4}}
SLACK = 3.0  # or within this many times the plain path's own error in the same dtype
NO_FLEX = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")  # transformers refuses flex_attention for these


def parse_args(argv=None):
    from vlmdpo.model.tiny import FAMILIES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="cuda, cpu, or auto (cuda when available)")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--attn", default="sdpa,flex_attention", help="attention kernels, each run over every family")
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--deadline", type=float, default=None, help="epoch s: cases not started by then are skipped")
    ap.add_argument("--out", default=None)
    return ap.parse_args(argv)


def _msg(role: str, *parts) -> dict:
    return {"role": role, "content": [p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts]}


def records(family: str) -> list:
    """One-image, text-only and (where the family takes several) two-image pairs, chosen and
    rejected of different lengths."""
    from vlmdpo.model.families import adapter_for
    from vlmdpo.model.tiny import tiny_image
    from vlmdpo.types import ImageRef, PreferenceRecord

    img = {"type": "image"}
    ans = lambda t: [_msg("assistant", t)]  # noqa: E731
    text = PreferenceRecord("text", [_msg("user", "Say hello.")], ans("Hello there."),
                            ans("Good morning to you, and a very fine day it is."), images=[])
    if family == "causal_lm":
        return [text, PreferenceRecord("text-2", [_msg("user", "Count.")], ans("One, two, three."), ans("Three."), images=[])]
    out = [PreferenceRecord("one-image", [_msg("user", img, "What is in the picture?")],
                            ans("A red square on a blue field, seen from above."), ans("A cat."),
                            images=[ImageRef(pil=tiny_image(1))]), text]
    if adapter_for(family).supports_multi_image:
        out.append(PreferenceRecord("two-images", [_msg("user", img, "and", img, "which is brighter?")],
                                    ans("The second one."), ans("Neither of them is bright at all."),
                                    images=[ImageRef(pil=tiny_image(2, (48, 64))), ImageRef(pil=tiny_image(3, (56, 56)))]))
    return out


def logps_and_grads(model, fn):
    """fn() -> LogpPair; backprop a fixed weighting of its log-probs; (float32 log-probs, grads)."""
    import torch

    model.zero_grad(set_to_none=True)
    out = fn()
    w = torch.arange(1, out.chosen_logps.numel() + 1, dtype=torch.float32, device=out.chosen_logps.device)
    (w * out.chosen_logps.float() - 0.5 * w * out.rejected_logps.float()).sum().backward()
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return torch.cat([out.chosen_logps, out.rejected_logps]).detach().float(), grads


def rel_err(x, ref) -> float:
    return float((x - ref).norm() / ref.norm().clamp_min(1e-12))


def grads_err(grads: dict, ref: dict) -> tuple[float, dict[str, float]]:
    """(||g - ref|| / ||ref|| over all gradients together, the same per parameter); inf where a
    parameter lost or gained its gradient or a gradient is not finite."""
    import torch

    if set(grads) != set(ref) or not all(torch.isfinite(g).all() for g in grads.values()):
        return float("inf"), {}
    per = {n: rel_err(grads[n], g) for n, g in ref.items()}
    num = sum(float((grads[n] - g).norm() ** 2) for n, g in ref.items())
    den = sum(float(g.norm() ** 2) for g in ref.values())
    return (num / max(den, 1e-24)) ** 0.5, per


def judge(errs: dict, layouts, tol: dict) -> bool:
    """Each layout's log-prob error, and each parameter's gradient error, within the dtype's
    tolerance or SLACK x the plain path's own error. Per parameter, because a wrong position or
    mask moves the attention weights' gradients far more than the embedding's, which dominate
    the total (seen: 0.14 vs 0.009 on one k_proj, 0.006 vs 0.006 over all gradients)."""
    plain = errs["plain"]
    for name in layouts:
        e = errs[name]
        if not e["per_param"] or e["logps"] > max(tol["logps"], SLACK * plain["logps"]):
            return False
        if any(v > max(tol["grads"], SLACK * plain["per_param"].get(n, 0.0)) for n, v in e["per_param"].items()):
            return False
    return True


def check(family: str, attn: str, device: str, dtype_name: str, train_steps: int) -> dict:
    import torch

    from vlmdpo.batching.plain import collate
    from vlmdpo.batching.shared import collate_shared
    from vlmdpo.encode import encode_pair
    from vlmdpo.model.families import adapter_for
    from vlmdpo.model.fast import fast_batch_logps
    from vlmdpo.model.logps import batch_logps
    from vlmdpo.model.tiny import build_tiny
    from vlmdpo.types import FastOptions

    dtype = torch.bfloat16 if dtype_name == "bfloat16" else torch.float32
    ref_model, processor = build_tiny(family, attn_implementation="eager")
    model, _ = build_tiny(family, attn_implementation=attn)
    model.load_state_dict(ref_model.state_dict())  # the same weights, whatever the build did
    ref_model.to(device)
    model.to(device=device, dtype=dtype)
    adapter = adapter_for(model)
    pad = getattr(processor, "tokenizer", processor).pad_token_id
    pairs = [encode_pair(r, processor, adapter, max_length=None) for r in records(family)]
    plain = collate(pairs, pad_token_id=pad, family=adapter)
    ref, ref_g = logps_and_grads(ref_model, lambda: batch_logps(ref_model, plain))
    got, got_g = logps_and_grads(model, lambda: batch_logps(model, plain))
    errs = {"plain": dict(zip(("grads", "per_param"), grads_err(got_g, ref_g)), logps=rel_err(got, ref))}
    layouts = {"shared": FastOptions(), "packed": FastOptions(padding_free=True)}
    for name, options in layouts.items():
        batch = collate_shared(pairs, pad_token_id=pad, family=adapter, options=options)
        fast, fast_g = logps_and_grads(model, lambda: fast_batch_logps(model, batch))
        errs[name] = dict(zip(("grads", "per_param"), grads_err(fast_g, ref_g)), logps=rel_err(fast, ref),
                          vs_plain_logps=rel_err(fast, got), layout=batch.layout)
        worst = max(errs[name]["per_param"].items(), key=lambda kv: kv[1] / max(errs["plain"]["per_param"].get(kv[0], 0), 1e-3),
                    default=("-", float("inf")))
        errs[name]["worst_param"] = {"name": worst[0], "err": worst[1], "plain_err": errs["plain"]["per_param"].get(worst[0])}
    tol = TOL[dtype_name]
    ok = bool(errs["plain"]["per_param"]) and judge(errs, layouts, tol)
    for e in errs.values():
        e["params"] = len(e.pop("per_param"))  # the worst one is kept; all of them would bury the report
    train = train_finite(model, adapter, collate_shared(pairs, pad_token_id=pad, family=adapter), train_steps)
    return {"status": "pass" if ok and train["finite"] else "FAIL", "errors": errs, "tolerance": tol, "train": train}


def train_finite(model, adapter, batch, steps: int) -> dict:
    """A few DPO steps on one batch: policy = the model, reference = a frozen copy."""
    import torch

    from vlmdpo.losses import compute_loss
    from vlmdpo.model.fast import fast_batch_logps

    reference = copy.deepcopy(model).eval().requires_grad_(False)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    losses, finite = [], True
    for _ in range(steps):
        with torch.no_grad():
            ref = fast_batch_logps(reference, batch)
        loss, _ = compute_loss(fast_batch_logps(model, batch), ref, loss_type="sigmoid", beta=0.1)
        loss.backward()
        finite &= bool(torch.isfinite(loss)) and all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(float(loss.detach()), 5))
    finite &= all(bool(torch.isfinite(p).all()) for p in params)
    return {"losses": losses, "finite": finite}


def table(cases: list[dict]) -> str:
    def cell(c: dict, n: str) -> str:
        if "errors" not in c:
            return "-"
        e = c["errors"][n]
        w = e.get("worst_param")
        worst = f" (worst {w['err']:.1e} vs plain {w['plain_err'] or 0:.1e})" if w else ""
        return f"{e['logps']:.1e} / {e['grads']:.1e}{worst}"

    lines = ["| family | attention | status | plain: logps / grads | shared: logps / grads (worst parameter) | "
             "packed: logps / grads (worst parameter) | train losses | note |", "|---|---|---|---|---|---|---|---|"]
    for c in cases:
        cells = " | ".join(cell(c, n) for n in ("plain", "shared", "packed"))
        losses = ", ".join(str(x) for x in (c.get("train") or {}).get("losses", [])) or "-"
        lines.append(f"| {c['family']} | {c['attn']} | {c['status']} | {cells} | {losses} | {c.get('note', '')[:160]} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    dtype_name = "bfloat16" if a.dtype == "bf16" else "float32"
    report = {"date_utc": now_utc(), "device": device_info(torch) if device == "cuda" else {"type": "cpu"},
              "versions": versions(), "dtype": dtype_name, "slack": SLACK, "cases": []}
    report["device"]["bf16_matmul_tflops_measured"] = matmul_tflops(torch) if device == "cuda" else None
    for attn in a.attn.split(","):
        for family in a.families.split(","):
            case = {"family": family, "attn": attn}
            t = time.time()
            if a.deadline and t > a.deadline:
                case.update(status="skipped", note="deadline reached")
            elif attn == "flex_attention" and family in NO_FLEX:
                case.update(status="skipped", note="transformers offers no flex_attention for this family")
            elif attn == "flex_attention" and device == "cpu":
                case.update(status="skipped", note="flex_attention runs on CUDA only here (no backward on CPU)")
            else:
                try:
                    case.update(check(family, attn, device, dtype_name, a.train_steps))
                except Exception as e:  # noqa: BLE001 - one family's failure must not hide the others'
                    case.update(status="FAIL", note=f"{type(e).__name__}: {e}"[:500], traceback=traceback.format_exc()[-3000:])
            case["seconds"] = round(time.time() - t, 2)
            report["cases"].append(case)
            print(f"[{attn} {family}] {case['status']} {case['seconds']}s {case.get('note', '')[:200]}", flush=True)
            write_json(a.out, report)
    counts = {k: sum(c["status"] == k for c in report["cases"]) for k in ("pass", "FAIL", "skipped")}
    report["counts"], report["table_md"] = counts, table(report["cases"])
    write_json(a.out, report)
    print(report["table_md"])
    print(f"correctness ({dtype_name}, {device}): {counts['pass']} pass, {counts['FAIL']} FAIL, {counts['skipped']} skipped")
    return 1 if counts["FAIL"] or not counts["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
