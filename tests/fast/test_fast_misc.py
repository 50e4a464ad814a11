"""Completion-only logits on a real model, attention-kernel limits, bf16, reference helper."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from fast_helpers import encoded, pad_id, plain_logps, tiny
from vlmdpo.batching.shared import collate_shared
from vlmdpo.model.fast import fast_batch_logps, resolve_options
from vlmdpo.model.fast.masks import build_attention_mask
from vlmdpo.types import FastOptions


def test_lm_head_never_sees_full_rows():
    model, processor, _ = tiny("qwen2_vl")
    batch = collate_shared(list(encoded("qwen2_vl")), pad_token_id=pad_id(processor), family="qwen2_vl",
                           options=FastOptions(logits_chunk_size=8))
    shapes = []
    head = model.get_output_embeddings()
    forward = head.forward  # the chunks call it directly, from the head's pre-hook: no forward hook sees them

    def spy(x):
        out = forward(x)
        shapes.append(tuple(out.shape))
        return out

    head.forward = spy
    try:
        out = fast_batch_logps(model, batch)
        out.chosen_logps.sum().backward()
    finally:
        del head.forward
        model.zero_grad(set_to_none=True)
    V = model.config.get_text_config().vocab_size
    R, T = batch.input_ids.shape
    n = batch.stats["completion_tokens"]
    assert shapes.count((R, 0, V)) == 1  # the model's own head call gets an empty slice
    chunks = [s for s in shapes if s != (R, 0, V)]
    assert all(c[0] <= 8 and c[1] == V and len(c) == 2 for c in chunks)
    assert sum(c[0] for c in chunks) == 2 * n  # forward, then each chunk once more in backward
    assert n < R * T / 2  # most positions (prompt, image, padding) never reach the head


def test_flash_attention_falls_back_to_plain_layout():
    fake = SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2"))
    o = resolve_options(FastOptions(padding_free=True), fake)
    assert (o.shared_prefix, o.padding_free, o.completion_only_logits, o.share_vision) == (False, False, True, True)
    assert resolve_options(FastOptions(), SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa"))) \
        == FastOptions()
    b = collate_shared(list(encoded("llava")), pad_token_id=0, family="llava")
    with pytest.raises(ValueError, match="shared_prefix: false"):
        build_attention_mask(b.doc, b.branch, b.positions, config=tiny("llava")[0].config,
                             attn_implementation="flash_attention_2", dtype=torch.float32)


def test_bf16_autocast_sdpa_runs_and_stays_close():
    model, processor, adapter = tiny("llava", "sdpa")
    pairs = list(encoded("llava"))
    with torch.no_grad():
        want = plain_logps(model, processor, adapter, pairs)
        batch = collate_shared(pairs, pad_token_id=pad_id(processor), family=adapter)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = fast_batch_logps(model, batch)
    assert got.chosen_logps.dtype == torch.float32 and torch.isfinite(got.chosen_logps).all()
    # bf16 keeps ~3 significant digits per token
    assert ((got.chosen_logps - want.chosen_logps).abs() <= 0.05 * want.chosen_lengths).all()


def test_options_on_the_batch_are_used_unless_overridden():
    model, processor, _ = tiny("llava")
    batch = collate_shared(list(encoded("llava")), pad_token_id=pad_id(processor), family="llava")
    with torch.no_grad():
        a = fast_batch_logps(model, batch)
        b = fast_batch_logps(model, batch, options=replace(batch.options, completion_only_logits=False))
    torch.testing.assert_close(a.chosen_logps, b.chosen_logps, atol=1e-4, rtol=0)
