"""Every fast path equals the plain path (vlmdpo.batching.plain + vlmdpo.model.logps) on every tiny family.

Pairs cover one image, text only, two images and an image-contrast pair (different rejected
image), with chosen and rejected of different lengths. fp32 on CPU. Log-probs are sums over
completion tokens, so they are compared within 1e-5 per token; gradients within 1e-4 of the
largest gradient entry of each parameter (at least 1e-4 absolute).
"""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from fast_helpers import ATOL_GRAD, ATOL_LOGP, encoded, grads_of, pad_id, plain_logps, tiny
from vlmdpo.batching.shared import collate_shared
from vlmdpo.model.fast import fast_batch_logps
from vlmdpo.types import FastOptions
from vlmdpo.model.tiny import FAMILIES

OPTIONS = {
    "shared": FastOptions(),
    "packed": FastOptions(padding_free=True),
    "plain-vision-once": FastOptions(shared_prefix=False),
    "full-logits": FastOptions(completion_only_logits=False),
}
# Turning completion-only logits off is family-independent (unit-tested in test_logits.py);
# two families keep it here to cover it end to end with the other paths on.
CASES = [(f, o) for f in FAMILIES for o in OPTIONS if o != "full-logits" or f in ("gemma3", "qwen2_vl")]


@lru_cache(maxsize=None)
def plain(family: str, attn: str = "eager"):
    model, processor, adapter = tiny(family, attn)
    return grads_of(model, lambda: plain_logps(model, processor, adapter, encoded(family)))


def assert_equal(out, ref, grads, ref_grads):
    for side in ("chosen", "rejected"):
        n = getattr(ref, f"{side}_lengths")
        assert torch.equal(getattr(out, f"{side}_lengths").cpu(), n.cpu())
        for kind in ("logps", "shared_logps"):
            got, want = getattr(out, f"{side}_{kind}"), getattr(ref, f"{side}_{kind}")
            assert got.dtype == torch.float32
            assert ((got - want).abs() <= ATOL_LOGP * n).all(), (side, kind, got, want)
    assert set(grads) == set(ref_grads)
    for name, g in ref_grads.items():
        tol = ATOL_GRAD * max(1.0, g.abs().max().item())
        assert (grads[name] - g).abs().max().item() <= tol, name


@pytest.mark.parametrize(("family", "option"), CASES)
def test_fast_path_equals_plain_path(family, option):
    model, processor, _ = tiny(family)
    ref, ref_grads = plain(family)
    batch = collate_shared(list(encoded(family)), pad_token_id=pad_id(processor), family=family, options=OPTIONS[option])
    out, grads = grads_of(model, lambda: fast_batch_logps(model, batch))
    assert_equal(out, ref, grads, ref_grads)


@pytest.mark.parametrize("family", ["idefics3", "qwen2_vl", "gemma3"])
def test_sdpa_equals_plain_path(family):
    model, processor, _ = tiny(family, "sdpa")
    ref, ref_grads = plain(family, "sdpa")
    batch = collate_shared(list(encoded(family)), pad_token_id=pad_id(processor), family=family)
    out, grads = grads_of(model, lambda: fast_batch_logps(model, batch))
    assert_equal(out, ref, grads, ref_grads)


def test_a_wrong_position_or_mask_would_be_caught():
    # The checks above must be able to fail: shifting rejected positions by one (as if rejected
    # continued after chosen), or letting rejected see chosen, moves log-probs far past the tolerance.
    model, processor, _ = tiny("llava")
    ref, _ = plain("llava")
    shifted = collate_shared(list(encoded("llava")), pad_token_id=pad_id(processor), family="llava")
    shifted.positions = shifted.positions + (shifted.branch == 2).long()
    leaky = collate_shared(list(encoded("llava")), pad_token_id=pad_id(processor), family="llava")
    leaky.branch = torch.where(leaky.branch == 2, torch.ones_like(leaky.branch), leaky.branch)
    with torch.no_grad():
        for bad in (shifted, leaky):
            out = fast_batch_logps(model, bad)
            assert (out.rejected_logps - ref.rejected_logps).abs().max() > 1e-3
