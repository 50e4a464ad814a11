"""Vision encoder once per pair, shared by policy and reference when frozen.

Counts real encoder runs (the tower's forward) across a reference pass and a policy pass on
one batch, and checks both passes still equal the plain path (reference: adapters off or
frozen copy; policy: log-probs and gradients, projector included).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from bundle_helpers import load_bundle
from fast_helpers import ATOL_GRAD, ATOL_LOGP, encoded, grads_of
from vlmdpo.batching.plain import collate
from vlmdpo.batching.shared import collate_shared
from vlmdpo.model.fast import fast_batch_logps
from vlmdpo.model.fast.vision import can_share_vision, frozen_tower, unwrap
from vlmdpo.model.logps import batch_logps
from vlmdpo.model.reference import make_reference
from vlmdpo.types import FastOptions


def bundle(family: str, finetuning_type: str = "lora", **kw):
    cfg = SimpleNamespace(model_name_or_path=f"tiny:{family}", finetuning_type=finetuning_type, loss_type="sigmoid",
                          lora_dropout=0.0, **kw)
    b = load_bundle(cfg)
    b.model.train()  # gradient checkpointing is active in train mode only (dropout is off)
    if finetuning_type == "lora":  # lora_B starts at zero: move it so policy and reference differ
        with torch.no_grad():
            for n, p in b.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    return b, make_reference(b.model, is_peft=b.is_peft, logps_fn=batch_logps)


def count_runs(module: torch.nn.Module) -> list[int]:
    """Count calls of the module's own forward (a replayed output does not call it)."""
    calls = [0]
    inner = module.forward

    def counted(*a, **k):
        calls[0] += 1
        return inner(*a, **k)

    module.forward = counted
    return calls


def run_step(b, ref, options: FastOptions, calls: list[int] | None = None):
    """Reference then policy on one fast batch, each checked against the plain path.
    Returns the policy's gradients and how many counted encoder runs the two fast passes made."""
    pairs = list(encoded(b.family.name))
    fast = collate_shared(pairs, pad_token_id=b.pad_token_id, family=b.family, options=options)
    plain = collate(pairs, pad_token_id=b.pad_token_id, family=b.family)
    before = calls[0] if calls else 0
    with torch.no_grad(), ref.context():
        ref_fast = fast_batch_logps(ref.model, fast)
    pol, grads = grads_of(b.model, lambda: fast_batch_logps(b.model, fast))
    runs = (calls[0] - before) if calls else None
    ref_plain = ref.logps(plain)
    pol_plain, grads_plain = grads_of(b.model, lambda: batch_logps(b.model, plain))
    for got, want in ((ref_fast, ref_plain), (pol, pol_plain)):
        n = want.chosen_lengths + want.rejected_lengths
        assert ((got.chosen_logps - want.chosen_logps).abs() <= ATOL_LOGP * n).all()
        assert ((got.rejected_logps - want.rejected_logps).abs() <= ATOL_LOGP * n).all()
    assert set(grads) == set(grads_plain) and grads
    for k, g in grads_plain.items():
        assert (grads[k] - g).abs().max() <= ATOL_GRAD * max(1.0, g.abs().max().item()), k
    return grads, runs


def test_lora_frozen_tower_trainable_projector_runs_tower_once():
    # default LoRA: tower frozen, projector trained in full (modules_to_save); with checkpointing
    b, ref = bundle("idefics3", gradient_checkpointing=True)
    assert not can_share_vision(b.model)
    tower = frozen_tower(b.model)
    assert tower is not None
    calls = count_runs(tower)
    grads, runs = run_step(b, ref, FastOptions(), calls)
    assert runs == 1  # the reference pass ran the tower; the policy pass replayed its output
    assert any("connector" in k for k in grads)  # the projector still learns


def test_frozen_copy_shares_whole_vision_path_when_projector_frozen():
    b, ref = bundle("qwen2_vl", "full", freeze_projector=True)
    assert can_share_vision(b.model) and can_share_vision(ref.model)
    visual_ref, visual_pol = unwrap(ref.model).model.visual, unwrap(b.model).model.visual
    calls_ref, calls_pol = count_runs(visual_ref), count_runs(visual_pol)
    fast = collate_shared(list(encoded("qwen2_vl")), pad_token_id=b.pad_token_id, family=b.family)
    with torch.no_grad():
        fast_batch_logps(ref.model, fast)
    fast_batch_logps(b.model, fast).chosen_logps.sum().backward()
    assert (calls_ref[0], calls_pol[0]) == (1, 0)  # one encoder pass for both models
    run_step(b, ref, FastOptions())


@pytest.mark.parametrize("option", [FastOptions(), FastOptions(shared_prefix=False)])
def test_trainable_tower_is_not_shared_but_still_runs_once_per_pair(option):
    b, ref = bundle("llava", "full", freeze_vision_tower=False)
    assert frozen_tower(b.model) is None and not can_share_vision(b.model)
    tower_pol = unwrap(b.model).model.vision_tower
    calls = count_runs(tower_pol)
    fast = collate_shared(list(encoded("llava")), pad_token_id=b.pad_token_id, family=b.family, options=option)
    fast_batch_logps(b.model, fast)
    assert calls[0] == 1  # one run over each pair's images, even in the plain layout
    grads, _ = run_step(b, ref, option)
    assert any("vision_tower" in k for k in grads)


def test_share_vision_off_runs_encoder_per_row_in_plain_layout():
    b, _ = bundle("llava", "full")
    tower = unwrap(b.model).model.vision_tower
    calls = count_runs(tower)
    pairs = list(encoded("llava"))
    per_row = [v["pixel_values"].shape[0] for p in pairs for v in (p.vision, p.rejected_vision or p.vision) if v]
    fast = collate_shared(pairs, pad_token_id=b.pad_token_id, family=b.family,
                          options=FastOptions(shared_prefix=False, share_vision=False))
    fast_batch_logps(b.model, fast)
    # like the peers: every row carries its images, the chosen and the rejected row alike
    assert calls[0] == 1 and fast.vision["pixel_values"].shape[0] == sum(per_row) == 8
