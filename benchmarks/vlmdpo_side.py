"""One measured run of vlmdpo's training step, for vs_trl.py.

The step is what `vlmdpo.train` runs per batch, built from the library's own pieces: encode
each pair (chat template + processor, in the timed step, as TRL's collator does), collate
(shared-prefix layout unless --fast none), reference log-probs (adapters off for LoRA, a frozen
copy for full fine-tuning; or the precomputed cache with --ref-cache), policy log-probs, the
sigmoid DPO loss, backward, gradient clipping at 1.0 (TRL's default), AdamW.
"""
from __future__ import annotations

import copy
from contextlib import nullcontext

from bench_common import device_info, peak_tflops, summarize
from bench_models import setup_side
from trl_side import image_patches


def records(rows):
    from vlmdpo.types import ImageRef, PreferenceRecord

    out = []
    for i, r in enumerate(rows):
        # TRL puts the image placeholder first in the first user turn; do the same
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["prompt"][0]["content"]}]}]
        chosen = [{"role": "assistant", "content": [{"type": "text", "text": r["chosen"][0]["content"]}]}]
        rejected = [{"role": "assistant", "content": [{"type": "text", "text": r["rejected"][0]["content"]}]}]
        out.append(PreferenceRecord(f"pair-{i}", prompt, chosen, rejected, images=[ImageRef(pil=im) for im in r["images"]]))
    return out


def prepare(a, model, logps_fn):
    """(policy, reference) with the same trainable set as the TRL run."""
    from vlmdpo.model.families import adapter_for
    from vlmdpo.model.prepare import disable_checkpointing, enable_checkpointing
    from vlmdpo.model.parts import apply_freezing, lora_plan
    from vlmdpo.model.reference import Reference

    family = adapter_for(model)
    if a.grad_ckpt:
        enable_checkpointing(model)
    if a.mode == "full":
        apply_freezing(model, family, vision=False, projector=False, language=False)
        ref = copy.deepcopy(model).eval().requires_grad_(False)
        if a.grad_ckpt:
            disable_checkpointing(ref)
        return model, Reference(ref, "frozen_copy", logps_fn), family
    from peft import LoraConfig, get_peft_model

    everything = a.lora_modules == "all"
    targets, to_save = lora_plan(model, family, target="all-linear", modules=a.lora_modules,
                                 vision=not everything, projector=False, language=False)
    lora = LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=a.lora_dropout, target_modules=targets,
                      modules_to_save=to_save or None, task_type="CAUSAL_LM", bias="none")
    policy = get_peft_model(model, lora)
    if a.grad_ckpt:
        policy.enable_input_require_grads()
    return policy, Reference(policy, "adapters_off", logps_fn), family


def run(a, rows) -> dict:
    import torch
    from vlmdpo.batching.plain import collate
    from vlmdpo.batching.shared import collate_shared
    from vlmdpo.encode import encode_pair
    from vlmdpo.losses import compute_loss
    from vlmdpo.model.fast import fast_batch_logps
    from vlmdpo.model.logps import batch_logps
    from vlmdpo.types import FastOptions

    clock, model, processor, split, fcfg = setup_side(a, torch)
    cuda = clock.cuda
    fast = a.fast != "none"

    def logps(m, batch):
        return fast_batch_logps(m, batch) if fast else batch_logps(m, batch)

    policy, reference, family = prepare(a, model, logps)
    policy.train()
    tok = processor.tokenizer
    pad = tok.pad_token_id
    image_id = model.config.image_token_id
    options = FastOptions()
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0, fused=cuda)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if (a.bf16 and cuda) else nullcontext()
    n_steps = a.warmup + a.steps
    recs = records(rows[: a.batch * n_steps])

    def make_batch(chunk):
        pairs = [encode_pair(r, processor, family, max_length=None) for r in chunk]
        batch = collate_shared(pairs, pad_token_id=pad, family=family, options=options) if fast else \
            collate(pairs, pad_token_id=pad, family=family)
        return pairs, batch

    cached = {}
    pre = {}
    if a.ref_cache:
        t = clock.now()
        for s in range(n_steps):
            _, batch = make_batch(recs[s * a.batch:(s + 1) * a.batch])
            with torch.no_grad(), reference.context(), amp:
                cached[s] = logps(reference.model, batch)
        pre = {"ref_precompute_s": round(clock.now() - t, 3), "ref_precompute_pairs": len(recs)}

    step_s, cpu_s, counts, losses = [], [], [], []
    prof = Profile(torch, a.profile_out)
    for s in range(n_steps):
        if s == a.warmup:
            clock.reset_peak()
            prof.start()
        t, c = clock.now(), clock.cpu()
        pairs, batch = make_batch(recs[s * a.batch:(s + 1) * a.batch])
        with amp:
            if a.ref_cache:
                ref = cached[s]
            else:
                with torch.no_grad(), reference.context():
                    ref = logps(reference.model, batch)
            pol = logps(policy, batch)
            loss, _ = compute_loss(pol, ref, loss_type="sigmoid", beta=a.beta)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 5))
        step_s.append(clock.now() - t)
        cpu_s.append(clock.cpu() - c)
        counts.append({
            "pairs": len(pairs), "prompt_tokens": sum(len(p.prompt_ids) for p in pairs),
            "chosen_tokens": sum(len(p.chosen_ids) for p in pairs),
            "rejected_tokens": sum(len(p.rejected_ids) for p in pairs),
            "image_tokens": sum(p.prompt_ids.count(image_id) for p in pairs),
            "processed_tokens": batch.num_tokens if fast else int(batch.model_inputs["attention_mask"].sum()),
            "padded_tokens": int((batch.input_ids if fast else batch.model_inputs["input_ids"]).numel()),
            "image_patches": sum(image_patches(p.vision, model.config) for p in pairs),
        })
    prof.stop()
    res = summarize(step_s[a.warmup:], counts[a.warmup:], clock, flops_cfg=fcfg,
                    peak=peak_tflops(device_info(torch), a.peak_tflops), cpu_s=cpu_s[a.warmup:],
                    full=a.mode == "full", ref_in_step=not a.ref_cache)
    if a.profile_out:
        res["profile"] = {"trace": a.profile_out, "top_ops": prof.top_ops()}
    res["losses"] = losses
    res["params"] = split | {"trainable": sum(p.numel() for p in params)}
    res["responses_present"] = all(c["chosen_tokens"] > 0 and c["rejected_tokens"] > 0 for c in counts)
    res["fast_paths"] = {"enabled": fast, **(options.__dict__ if fast else {})}
    return res | pre



class Profile:
    """torch.profiler over the timed steps when `path` is set (a no-op otherwise): a gzipped
    Chrome trace at `path` and the top operators by device time (CPU time on a CPU run)."""

    def __init__(self, torch, path: str | None):
        self.torch, self.path, self.prof = torch, path, None

    def start(self) -> None:
        if not self.path:
            return
        act = [self.torch.profiler.ProfilerActivity.CPU]
        if self.torch.cuda.is_available():
            act.append(self.torch.profiler.ProfilerActivity.CUDA)
        self.prof = self.torch.profiler.profile(activities=act, record_shapes=True)
        self.prof.__enter__()

    def stop(self) -> None:
        if self.prof is None:
            return
        import gzip
        import os
        import shutil

        self.torch.cuda.synchronize() if self.torch.cuda.is_available() else None
        self.prof.__exit__(None, None, None)
        raw = self.path.removesuffix(".gz")
        self.prof.export_chrome_trace(raw)
        if raw != self.path:
            with open(raw, "rb") as src, gzip.open(self.path, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.unlink(raw)

    def top_ops(self, n: int = 25) -> str:
        key = "self_device_time_total" if self.torch.cuda.is_available() else "self_cpu_time_total"
        return self.prof.key_averages().table(sort_by=key, row_limit=n) if self.prof else ""
