"""Shared helpers for the model-layer tests (imported by name: `from model_cases import ...`)."""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from vlmdpo.batching.plain import collate
from vlmdpo.encode import encode_pair
from vlmdpo.model.families import adapter_for
from vlmdpo.model.logps import batch_logps
from vlmdpo.model.tiny import FAMILIES, tiny_record

VLM_FAMILIES = tuple(f for f in FAMILIES if f != "causal_lm")


def pair_records(family: str):
    """Pairs of different lengths: one image, two images and none for a VLM (two text-only
    pairs for causal_lm), so padding, vision stacking and mixed batches are exercised."""
    other = dict(question="Is it red?", chosen="No.", rejected="Yes, it is very red.")
    if family == "causal_lm":
        return [tiny_record(0, seed=1), tiny_record(0, seed=2, **other)]
    return [tiny_record(1, seed=1), tiny_record(2, seed=2, **other), tiny_record(0, seed=3, chosen="Fine.")]


def make_batch(records, model, processor):
    ad = adapter_for(model)
    tok = getattr(processor, "tokenizer", processor)
    pairs = [encode_pair(r, processor, ad, max_length=None) for r in records]
    return collate(pairs, pad_token_id=tok.pad_token_id, family=ad), pairs


def cfg(family="qwen2_vl", **kw):
    base = dict(model_name_or_path=f"tiny:{family}", finetuning_type="lora", lora_rank=4, lora_alpha=8, seed=0)
    return SimpleNamespace(**{**base, **kw})


def dpo_step(bundle, lr=0.5):
    """One plain-SGD step on -logsigmoid(chosen - rejected) over the first pair; returns its batch."""
    batch, _ = make_batch(pair_records(bundle.family.name)[:1], bundle.model, bundle.processor)
    out = batch_logps(bundle.model, batch)
    loss = -F.logsigmoid(out.chosen_logps - out.rejected_logps).mean()
    loss.backward()
    with torch.no_grad():
        for p in bundle.model.parameters():
            if p.requires_grad and p.grad is not None:
                p -= lr * p.grad
    return batch
