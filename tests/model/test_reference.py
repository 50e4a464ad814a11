"""make_reference: adapters off for LoRA, a frozen copy for full fine-tuning; none when the losses need none."""
from __future__ import annotations

import pytest
import torch
from bundle_helpers import load_bundle
from model_cases import cfg, dpo_step, make_batch, pair_records

from vlmdpo.losses import needs_reference
from vlmdpo.model.logps import batch_logps
from vlmdpo.model.reference import make_reference
from vlmdpo.model.tiny import build_tiny


def close(a, b):
    torch.testing.assert_close(a.chosen_logps, b.chosen_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.rejected_logps, b.rejected_logps, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3", "causal_lm"])
def test_lora_reference_is_the_base_model_after_training(family):
    bundle = load_bundle(cfg(family))
    ref = make_reference(bundle.model, is_peft=bundle.is_peft, logps_fn=batch_logps)
    assert ref.kind == "adapters_off" and ref.model is bundle.model
    batch = dpo_step(bundle)  # moves LoRA B and the projector copy (modules_to_save)
    dpo_step(bundle)  # second step: LoRA A moves too
    base, _ = build_tiny(family)
    with torch.no_grad():
        expected = batch_logps(base, batch)
        policy = batch_logps(bundle.model, batch)
    close(ref.logps(batch), expected)
    assert not torch.allclose(policy.chosen_logps, expected.chosen_logps, atol=1e-4)
    assert ref.logps(batch).chosen_logps.requires_grad is False


def test_full_reference_is_a_frozen_copy():
    bundle = load_bundle(cfg("gemma3", finetuning_type="full", gradient_checkpointing=True))
    ref = make_reference(bundle.model, is_peft=bundle.is_peft, logps_fn=batch_logps)
    assert ref.kind == "frozen_copy" and ref.model is not bundle.model
    assert not any(p.requires_grad for p in ref.model.parameters()) and not ref.model.training
    batch, _ = make_batch(pair_records("gemma3")[:1], bundle.model, bundle.processor)
    before = ref.logps(batch)
    dpo_step(bundle)
    close(ref.logps(batch), before)
    with torch.no_grad():
        assert not torch.allclose(batch_logps(bundle.model, batch).chosen_logps, before.chosen_logps, atol=1e-4)


@pytest.mark.parametrize("loss_type", ["simpo", "orpo", ["simpo", "sft"]])
def test_reference_free_losses_get_no_reference(loss_type):
    # the caller decides: train.stages.reference_sources calls make_reference only when the losses need one
    assert needs_reference(loss_type) is False
