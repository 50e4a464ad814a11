"""The loop's fast layout (on by default) trains exactly as the plain layout does."""
from __future__ import annotations

import pytest
import torch

from train_helpers import SAMPLE_IMAGES, read_jsonl, tiny_config
from vlmdpo.types import SharedBatch
from vlmdpo.train import data as train_data
from vlmdpo.train.loop import run_training

PLAIN = dict(share_vision=False, shared_prefix=False, completion_only_logits=False, padding_free=False)


def _run(tmp_path, name, monkeypatch, **overrides):
    kinds: list[str] = []
    real = train_data.to_device

    def spy(step, device):  # which layout reached the step
        kinds.append(type(step.batch).__name__)
        return real(step, device)

    monkeypatch.setattr("vlmdpo.train.run.to_device", spy)
    monkeypatch.setattr("vlmdpo.train.step.to_device", spy)
    cfg = tiny_config(tmp_path / name, SAMPLE_IMAGES, model_name_or_path="tiny:qwen2_vl", max_steps=3,
                      learning_rate=1e-2, **overrides)
    res = run_training(cfg, echo=lambda _m: None)
    weights = {n: p.detach().clone() for n, p in res.model.named_parameters() if p.requires_grad}
    rows = [r for r in read_jsonl(tmp_path / name / "out" / "metrics.jsonl") if "loss" in r]
    return weights, rows, set(kinds)


@pytest.mark.parametrize("finetuning_type", ["lora", "full"])
def test_fast_layout_trains_like_the_plain_layout(tmp_path, monkeypatch, finetuning_type):
    # lora_dropout 0: dropout masks are drawn per token, and the shared prefix has fewer tokens than the
    # plain layout, so with dropout the two runs would differ by their random masks alone.
    extra = {"lora_dropout": 0.0} if finetuning_type == "lora" else {"finetuning_type": "full"}
    fast_w, fast_rows, fast_kinds = _run(tmp_path, "fast", monkeypatch, **extra)
    plain_w, plain_rows, plain_kinds = _run(tmp_path, "plain", monkeypatch, **PLAIN, **extra)
    assert fast_kinds == {SharedBatch.__name__} and plain_kinds == {"Batch"}
    for a, b in zip(fast_rows, plain_rows):
        for key in ("loss", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    assert fast_w.keys() == plain_w.keys()
    # Adam turns fp32 rounding in near-zero gradients into updates of up to lr (1e-2) in size; 1e-4 is 1%
    # of one such step, far below what any real layout bug moves (whole steps, every element).
    for n in fast_w:
        torch.testing.assert_close(fast_w[n], plain_w[n], rtol=1e-3, atol=1e-4, msg=n)
