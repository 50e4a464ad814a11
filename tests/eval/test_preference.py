from __future__ import annotations

import math

import pytest
import torch

from vlmdpo.eval.preference import encode_records, pair_logps, preference_metrics
from vlmdpo.types import LogpPair


def _lp(chosen, rejected):
    c, r = torch.tensor(chosen), torch.tensor(rejected)
    return LogpPair(c, r, torch.ones_like(c), torch.ones_like(r))


def test_golden_values_by_hand():
    policy = _lp([-1.0, -2.0, -1.0], [-2.0, -2.0, -3.0])
    ref = _lp([-1.5, -2.0, -2.0], [-1.5, -2.0, -2.0])
    m = preference_metrics(policy, ref, beta=0.5, groups=["a", "b", "a"])
    # chosen rewards 0.5*(0.5, 0, 1) = (0.25, 0, 0.5); rejected 0.5*(-0.5, 0, -1) = (-0.25, 0, -0.5)
    # margins (0.5, 0, 1.0): two wins and one tie (half a win) -> 2.5 / 3
    assert m["n"] == 3
    assert m["reward_accuracy"] == pytest.approx(2.5 / 3)
    assert m["reward_margin"] == pytest.approx(0.5)
    assert m["rewards_chosen"] == pytest.approx(0.25)
    assert m["rewards_rejected"] == pytest.approx(-0.25)
    # own log-prob differences (1, 0, 2)
    assert m["logp_accuracy"] == pytest.approx(2.5 / 3)
    assert m["logp_margin"] == pytest.approx(1.0)
    assert m["by_group"]["a"]["reward_accuracy"] == pytest.approx(1.0)
    assert m["by_group"]["a"]["reward_margin"] == pytest.approx(0.75)
    assert m["by_group"]["b"]["reward_accuracy"] == pytest.approx(0.5)
    assert m["by_group"]["b"]["n"] == 1


def test_model_against_itself_is_a_coin_flip():
    lp = _lp([-3.0, -1.0], [-1.0, -3.0])
    m = preference_metrics(lp, lp, beta=0.1)
    assert m["reward_accuracy"] == 0.5 and m["reward_margin"] == 0.0
    assert m["logp_accuracy"] == 0.5  # one pair each way


def test_shape_mismatch_and_bad_groups_are_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        preference_metrics(_lp([-1.0], [-1.0]), _lp([-1.0, -2.0], [-1.0, -2.0]), beta=0.1)
    with pytest.raises(ValueError, match="group labels"):
        preference_metrics(_lp([-1.0], [-1.0]), _lp([-1.0], [-1.0]), beta=0.1, groups=["a", "b"])


def test_empty_is_nan_not_a_crash():
    m = preference_metrics(_lp([], []), _lp([], []), beta=0.1)
    assert m["n"] == 0 and math.isnan(m["reward_accuracy"])


def test_pair_logps_match_direct_scoring_and_ignore_batch_size(tiny_idefics3, demo_records):
    from vlmdpo.batching.plain import collate
    from vlmdpo.encode import encode_pair
    from vlmdpo.model.families import adapter_for
    from vlmdpo.model.logps import batch_logps

    model, processor = tiny_idefics3
    fam = adapter_for(model)
    pad = processor.tokenizer.pad_token_id
    pairs, kept, dropped = encode_records(demo_records, lambda r: encode_pair(r, processor, fam, max_length=512))
    assert len(pairs) == len(demo_records) and not dropped and kept == list(range(len(demo_records)))
    one = pair_logps(model, pairs, family=fam, pad_token_id=pad, batch_size=1)
    three = pair_logps(model, pairs, family=fam, pad_token_id=pad, batch_size=3)
    with torch.no_grad():
        direct = batch_logps(model, collate(pairs[:2], pad_token_id=pad, family=fam))
    assert torch.allclose(one.chosen_logps, three.chosen_logps, atol=1e-4)
    assert torch.allclose(one.rejected_logps, three.rejected_logps, atol=1e-4)
    assert torch.allclose(one.chosen_logps[:2], direct.chosen_logps.float(), atol=1e-4)
    assert (one.chosen_logps < 0).all()
    m = preference_metrics(one, one, beta=0.1)
    assert m["reward_accuracy"] == 0.5


def test_unencodable_pairs_are_reported(tiny_idefics3, demo_records):
    from vlmdpo.encode import encode_pair
    from vlmdpo.model.families import adapter_for

    model, processor = tiny_idefics3
    fam = adapter_for(model)
    pairs, kept, dropped = encode_records(
        demo_records, lambda r: encode_pair(r, processor, fam, max_length=8, truncation="drop"))
    assert not pairs and len(dropped) == len(demo_records)
    assert dropped[0].id == demo_records[0].id and dropped[0].message
