"""Pure pieces of the loop: step plan, data order, rotation, metric averaging, splitting, plotting."""
from __future__ import annotations

import pytest
import torch

from vlmdpo.train import checkpoint as ckpt
from vlmdpo.train.data import split_validation
from vlmdpo.train.metrics import MetricsLog, WeightedMean, read_metrics
from vlmdpo.train.plot import plot_training_curves
from vlmdpo.train.schedule import build_optimizer, epoch_batches, plan_steps, shard
from vlmdpo.types import PreferenceRecord


def test_plan_steps_arithmetic():
    p = plan_steps(10, batch_size=2, world_size=1, grad_accum=2, num_train_epochs=2, max_steps=-1,
                   warmup_steps=0, warmup_ratio=0.1)
    assert (p.batches_per_epoch, p.steps_per_epoch, p.total_steps, p.warmup_steps, p.num_epochs) == (5, 3, 6, 1, 2)
    p = plan_steps(10, batch_size=2, world_size=2, grad_accum=1, num_train_epochs=1, max_steps=7,
                   warmup_steps=3, warmup_ratio=0.5)
    assert (p.batches_per_epoch, p.total_steps, p.warmup_steps, p.num_epochs) == (3, 7, 3, 3)
    with pytest.raises(ValueError, match="no training pairs"):
        plan_steps(0, batch_size=1, world_size=1, grad_accum=1, num_train_epochs=1, max_steps=-1,
                   warmup_steps=0, warmup_ratio=0)


def test_epoch_batches_seeded_and_split_across_ranks_like_one_big_batch():
    one = epoch_batches(10, epoch=0, seed=3, batch_size=4)
    assert one == epoch_batches(10, epoch=0, seed=3, batch_size=4)
    assert one != epoch_batches(10, epoch=1, seed=3, batch_size=4)
    assert sorted(i for b in one for i in b) == list(range(10)) and [len(b) for b in one] == [4, 4, 2]
    r0 = epoch_batches(8, epoch=0, seed=3, batch_size=2, world_size=2, rank=0)
    r1 = epoch_batches(8, epoch=0, seed=3, batch_size=2, world_size=2, rank=1)
    big = epoch_batches(8, epoch=0, seed=3, batch_size=4)
    assert [a + b for a, b in zip(r0, r1)] == big
    # uneven: the last global batch wraps so both ranks run the same number of steps
    u0 = epoch_batches(5, epoch=0, seed=0, batch_size=2, world_size=2, rank=0)
    u1 = epoch_batches(5, epoch=0, seed=0, batch_size=2, world_size=2, rank=1)
    assert len(u0) == len(u1) == 2 and all(len(b) == 2 for b in u0 + u1)
    assert set(i for b in u0 + u1 for i in b) == set(range(5))
    assert shard([0, 1, 2, 3, 4], world_size=2, rank=1) == [1, 3]


def _fake_checkpoint(out, step):
    d = out / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / ckpt.STATE_FILE).write_text(ckpt.TrainState(global_step=step).to_json())
    return d


def test_rotation_keeps_newest_and_best(tmp_path):
    for s in (1, 2, 3, 4):
        _fake_checkpoint(tmp_path, s)
    (tmp_path / "checkpoint-9").mkdir()  # incomplete (no state file): ignored, never picked for resume
    assert ckpt.latest_checkpoint(tmp_path).name == "checkpoint-4"
    removed = ckpt.rotate_checkpoints(tmp_path, 2, keep=tmp_path / "checkpoint-1")
    assert [p.name for p in removed] == ["checkpoint-2", "checkpoint-3"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-4"]
    assert ckpt.rotate_checkpoints(tmp_path, None) == []
    assert ckpt.resolve_resume("auto", tmp_path).name == "checkpoint-4"
    assert ckpt.resolve_resume(None, tmp_path) is None
    with pytest.raises(ValueError, match="not a vlmdpo checkpoint"):
        ckpt.resolve_resume(str(tmp_path / "checkpoint-9"), tmp_path)


def test_weighted_mean_and_metrics_log_resume_truncation(tmp_path):
    w = WeightedMean()
    w.add({"loss": 1.0}, 1)
    w.add({"loss": 4.0}, 3)
    assert w.result() == {"loss": pytest.approx(3.25)}
    log = MetricsLog(tmp_path / "m.jsonl", enabled=True)
    for s in (1, 2, 3):
        log.write(s, s / 3, {"loss": float(s), "bad": float("nan")})
    assert read_metrics(tmp_path / "m.jsonl")[0] == {"step": 1, "epoch": 0.3333, "loss": 1.0, "bad": "nan"}
    MetricsLog(tmp_path / "m.jsonl", enabled=True, truncate_after_step=2)  # a resume from step 2
    assert [r["step"] for r in read_metrics(tmp_path / "m.jsonl")] == [1, 2]


def test_split_validation_is_seeded_and_checked():
    recs = [PreferenceRecord(id=str(i), prompt=[], chosen=[], rejected=[]) for i in range(10)]
    tr, va = split_validation(recs, 0.2, seed=1)
    assert len(tr) == 8 and len(va) == 2 and {r.id for r in tr} | {r.id for r in va} == {str(i) for i in range(10)}
    assert [r.id for r in va] == [r.id for r in split_validation(recs, 0.2, seed=1)[1]]
    assert len(split_validation(recs, 3, seed=1)[1]) == 3
    with pytest.raises(ValueError, match="no training pairs"):
        split_validation(recs, 10, seed=1)


def test_optimizer_skips_frozen_and_decays_only_matrices():
    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    m[2].weight.requires_grad_(False)
    opt = build_optimizer(m, learning_rate=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([3, 3])] and decay["weight_decay"] == 0.1
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(m, learning_rate=1e-3, weight_decay=0.0)


def test_plot_writes_png(tmp_path):
    rows = [{"step": s, "loss": 1 / s, "rewards/accuracies": 0.5} for s in range(1, 5)]
    rows.append({"step": 4, "eval_loss": 0.3, "eval_rewards/accuracies": 0.7})
    out = plot_training_curves(rows, tmp_path / "c.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_training_curves([{"step": 1}], tmp_path / "none.png") is None
