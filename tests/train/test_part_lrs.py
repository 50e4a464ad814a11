"""vision_tower_lr / projector_lr: each part's own optimizer groups and schedule, checked on tiny:idefics3."""
from __future__ import annotations

import pytest
import torch

from train_helpers import SAMPLE_IMAGES, read_jsonl, tiny_config
from vlmdpo.train.schedule import build_optimizer


def test_part_rates_get_their_own_groups_after_the_main_two():
    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    names = {"0": "vision_tower", "1": "language_model", "2": "projector"}

    def part_of(name: str) -> str:
        return names[name.split(".")[0]]

    plain = build_optimizer(m, learning_rate=1e-3, weight_decay=0.1)
    same = build_optimizer(m, learning_rate=1e-3, weight_decay=0.1, part_lrs={}, part_of=part_of)
    assert [len(g["params"]) for g in plain.param_groups] == [len(g["params"]) for g in same.param_groups] == [2, 4]
    opt = build_optimizer(m, learning_rate=1e-3, weight_decay=0.1, part_lrs={"vision_tower": 1e-5, "projector": 2e-4},
                          part_of=part_of)
    got = [(g["lr"], g["weight_decay"], [tuple(p.shape) for p in g["params"]]) for g in opt.param_groups]
    assert got == [(1e-3, 0.0, [(3,), (3,)]),  # the LayerNorm: the main rate, no decay (there is no main matrix)
                   (1e-5, 0.1, [(3, 3)]), (1e-5, 0.0, [(3,)]), (2e-4, 0.1, [(2, 3)]), (2e-4, 0.0, [(2,)])]
    with pytest.raises(ValueError, match="part_of"):
        build_optimizer(m, learning_rate=1e-3, weight_decay=0.0, part_lrs={"projector": 1e-4})


@pytest.mark.parametrize("values, message", [
    ({"vision_tower_lr": 1e-5}, "vision_tower_lr: set, but freeze_vision_tower is true"),
    ({"projector_lr": 1e-5, "freeze_projector": True}, "projector_lr: set, but freeze_projector is true"),
    ({"projector_lr": -1.0}, "projector_lr: must be a positive number"),
    ({"vit_lr": 1e-5}, "vit_lr.*use vision_tower_lr"),  # ms-swift's names point to ours
    ({"aligner_lr": 1e-5}, "aligner_lr.*use projector_lr"),
])
def test_part_rate_config_errors(values, message):
    from vlmdpo.config import load_config

    with pytest.raises(ValueError, match=message):
        load_config(None, {"model_name_or_path": "tiny:idefics3", "dataset": "d.jsonl", **values})


def _run(tmp_path, name: str, monkeypatch, **overrides):
    import vlmdpo.train.loop as loop_mod
    from vlmdpo.train.loop import run_training

    rates: list[list[float]] = []
    real = loop_mod.train_step

    def spy(micro, **kw):
        rates.append([g["lr"] for g in kw["optimizer"].param_groups])
        return real(micro, **kw)

    monkeypatch.setattr(loop_mod, "train_step", spy)
    cfg = tiny_config(tmp_path / name, SAMPLE_IMAGES, model_name_or_path="tiny:idefics3", max_steps=3,
                      learning_rate=1e-2, warmup_steps=0, freeze_vision_tower=False, freeze_projector=False,
                      lora_dropout=0.0, max_length=512, **overrides)
    said: list[str] = []
    run_training(cfg, echo=said.append)
    losses = [r["loss"] for r in read_jsonl(tmp_path / name / "out" / "metrics.jsonl") if "loss" in r]
    return rates, losses


def test_part_rates_train_tiny_idefics3(tmp_path, monkeypatch):
    _, plain = _run(tmp_path, "plain", monkeypatch)
    rates, same = _run(tmp_path, "same", monkeypatch, vision_tower_lr=1e-2, projector_lr=1e-2)
    assert same == plain  # a part's rate equal to learning_rate: the run as without it
    rates, slow = _run(tmp_path, "slow", monkeypatch, vision_tower_lr=1e-4, projector_lr=1e-3)
    assert len(slow) == 3 and slow[0] == plain[0] and slow[1:] != plain[1:]  # step 1 is before any update
    # linear decay from each group's own peak: the LoRA matrices, the tower's matrices and its norms (trained in
    # full), the projector's matrix
    assert [[round(x / (1 - s / 3), 12) for x in step] for s, step in enumerate(rates)] == \
        [[1e-2, 1e-4, 1e-4, 1e-3]] * 3
