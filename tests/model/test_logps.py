"""batch_logps: hand-computed golden values, then every tiny family end to end."""
from __future__ import annotations

import math

import pytest
import torch
from model_cases import make_batch, pair_records

from vlmdpo.model.logps import batch_logps, reduce_logps, token_logps
from vlmdpo.model.tiny import FAMILIES, build_tiny


def test_token_logps_golden():
    # one pair: chosen row [0, 1, 2] (answer = tokens 1, 2), rejected row [0, 2, pad] (answer = token 2)
    input_ids = torch.tensor([[0, 1, 2], [0, 2, 0]])
    completion_mask = torch.tensor([[0, 1, 1], [0, 1, 0]])
    logits = torch.tensor([
        [[0.0, 0.0, 0.0], [0.0, math.log(2), 0.0], [5.0, 5.0, 5.0]],
        [[1.0, 2.0, 3.0], [9.0, 9.0, 9.0], [9.0, 9.0, 9.0]],
    ])
    per_token = token_logps(logits, input_ids, completion_mask)
    # p(1 | uniform) = 1/3; p(2 | [1, 2, 1]) = 1/4; p(2 | softmax(1, 2, 3)) = e^3 / (e + e^2 + e^3)
    lp_r = 3 - math.log(math.e + math.e**2 + math.e**3)
    expected = [[-math.log(3), -math.log(4)], [lp_r, 0.0]]
    assert per_token.flatten().tolist() == pytest.approx(sum(expected, []), abs=1e-6)
    out = reduce_logps(per_token, completion_mask[:, 1:], num_pairs=1)
    assert out.chosen_logps.tolist() == pytest.approx([-math.log(3) - math.log(4)], abs=1e-6)
    assert out.rejected_logps.tolist() == pytest.approx([lp_r], abs=1e-6)
    assert out.chosen_lengths.tolist() == [2] and out.rejected_lengths.tolist() == [1]
    # shared length min(2, 1) = 1: only the first chosen token
    assert out.chosen_shared_logps.tolist() == pytest.approx([-math.log(3)], abs=1e-6)
    assert out.rejected_shared_logps.tolist() == pytest.approx([lp_r], abs=1e-6)


def test_shared_sums_count_completion_tokens_not_positions():
    # 2 pairs; completion tokens start at different columns in each row
    per_token = torch.tensor([[9.0, -1.0, -2.0, -3.0], [-1.0, -2.0, 9.0, 9.0],
                              [9.0, 9.0, -4.0, -5.0], [-6.0, -7.0, -8.0, 9.0]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 0]])
    out = reduce_logps(per_token, mask, num_pairs=2)
    assert out.chosen_logps.tolist() == [-6.0, -3.0] and out.rejected_logps.tolist() == [-9.0, -21.0]
    assert out.chosen_lengths.tolist() == [3, 2] and out.rejected_lengths.tolist() == [2, 3]
    assert out.chosen_shared_logps.tolist() == [-3.0, -3.0]  # first 2 of 3 | both of 2
    assert out.rejected_shared_logps.tolist() == [-9.0, -13.0]  # both of 2 | first 2 of 3


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_logps_finite_and_independent_of_batchmates(family, tiny_model):
    model, proc = tiny_model(family)
    records = pair_records(family)
    batch, pairs = make_batch(records, model, proc)
    with torch.no_grad():
        together = batch_logps(model, batch)
        alone = batch_logps(model, make_batch(records[:1], model, proc)[0])
        text_only = batch_logps(model, make_batch(records[-1:], model, proc)[0])  # no pixels at all
    assert torch.isfinite(together.chosen_logps).all() and torch.isfinite(together.rejected_logps).all()
    assert together.chosen_logps.dtype == torch.float32
    assert together.chosen_lengths.tolist() == [len(p.chosen_ids) for p in pairs]
    assert together.rejected_lengths.tolist() == [len(p.rejected_ids) for p in pairs]
    assert (together.chosen_logps < 0).all()
    # right padding, other pairs' images and tile padding must not change a pair's log-probs
    torch.testing.assert_close(together.chosen_logps[:1], alone.chosen_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(together.rejected_logps[:1], alone.rejected_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(together.chosen_logps[-1:], text_only.chosen_logps, atol=1e-5, rtol=0)


def test_logps_are_fp32_for_a_bf16_model():
    model, proc = build_tiny("qwen2_vl", dtype=torch.bfloat16)
    batch, _ = make_batch(pair_records("qwen2_vl")[:1], model, proc)
    with torch.no_grad():
        out = batch_logps(model, batch)
    assert out.chosen_logps.dtype == torch.float32 and torch.isfinite(out.chosen_logps).all()


def test_gradients_flow_to_the_policy(tiny_model):
    model, proc = build_tiny("gemma3")
    batch, _ = make_batch(pair_records("gemma3")[:2], model, proc)
    out = batch_logps(model, batch)
    (out.chosen_logps - out.rejected_logps).sum().backward()
    head = model.get_output_embeddings().weight.grad
    vision = next(model.model.vision_tower.parameters()).grad
    assert head is not None and head.abs().sum() > 0 and vision is not None and vision.abs().sum() > 0
