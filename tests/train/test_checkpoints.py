"""Checkpoints: exact resume, NaN stop keeping the last good one, rotation, early stopping."""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import read_jsonl, tiny_config, write_text_prefs
from vlmdpo.train.loop import run_training
from vlmdpo.train.step import TrainingError

quiet = dict(echo=lambda _m: None)


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_resume_continues_bit_for_bit(tmp_path):
    data = write_text_prefs(tmp_path / "prefs.jsonl", n=8)
    # 1 pair x 2 accumulation -> 4 steps per epoch; the checkpoint at step 3 is mid-epoch and
    # the run crosses into epoch 2; bco_pair's running mean must be restored too.
    common = dict(per_device_train_batch_size=1, gradient_accumulation_steps=2, max_steps=6, warmup_steps=2,
                  loss_type=["sigmoid", "bco_pair"], lora_dropout=0.1)
    a = run_training(tiny_config(tmp_path / "a", data, save_steps=3, **common), **quiet)
    assert sorted(p.name for p in (tmp_path / "a" / "out").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]

    (tmp_path / "b" / "out").mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "out" / "checkpoint-3", tmp_path / "b" / "out" / "checkpoint-3")
    b = run_training(tiny_config(tmp_path / "b", data, resume_from_checkpoint="auto", **common), **quiet)
    wa, wb = _trainable(a.model), _trainable(b.model)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "resumed weights differ from the uninterrupted run"
    rows_a = {r["step"]: r for r in read_jsonl(tmp_path / "a" / "out" / "metrics.jsonl")}
    rows_b = {r["step"]: r for r in read_jsonl(tmp_path / "b" / "out" / "metrics.jsonl")}
    assert sorted(rows_b) == [4, 5, 6]
    for s in (4, 5, 6):
        for k in ("loss", "rewards/margins", "grad_norm", "learning_rate"):
            assert rows_a[s][k] == rows_b[s][k], (s, k)


def test_resume_auto_without_checkpoint_starts_fresh(tmp_path, text_prefs):
    msgs: list[str] = []
    res = run_training(tiny_config(tmp_path, text_prefs, max_steps=1, resume_from_checkpoint="auto"),
                       echo=msgs.append)
    assert res.global_step == 1 and any("starting fresh" in m for m in msgs)


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, text_prefs, monkeypatch):
    import vlmdpo.train.step as step_mod

    real = step_mod.compute_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, m = real(*args, **kwargs)
        if args[0].chosen_logps.requires_grad:  # training forwards only
            calls["n"] += 1
        if calls["n"] == 3:  # one micro-batch per step: the third step
            loss = loss * float("nan")
        return loss, m

    monkeypatch.setattr(step_mod, "compute_loss", poisoned)
    cfg = tiny_config(tmp_path, text_prefs, max_steps=4, save_steps=2)
    with pytest.raises(TrainingError) as e:
        run_training(cfg, **quiet)
    text = str(e.value)
    assert "step 3" in text and "nan" in text.lower() and "checkpoint-2" in text and "learning_rate" in text
    out = tmp_path / "out"
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    assert not (out / "checkpoint-3").exists() and not (out / "adapter_model.safetensors").exists()
    assert not list(out.glob(".tmp-*"))


def test_save_total_limit_rotates_atomically(tmp_path, text_prefs):
    cfg = tiny_config(tmp_path, text_prefs, max_steps=5, save_steps=1, save_total_limit=2)
    run_training(cfg, **quiet)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("checkpoint-", ".tmp"))) == [
        "checkpoint-4", "checkpoint-5"]


def test_early_stopping_keeps_and_restores_the_best(tmp_path, text_prefs, monkeypatch):
    import vlmdpo.train.loop as loop_mod

    script = iter([1.0, 0.5, 0.7, 0.6, 0.4, 0.3])  # best at the 2nd eval, then 2 without improvement

    def fake_evaluate(*_a, **_k):
        return {"loss": next(script), "rewards/accuracies": 0.5}

    monkeypatch.setattr(loop_mod, "evaluate", fake_evaluate)
    cfg = tiny_config(tmp_path, text_prefs, max_steps=10, val_size=2, eval_steps=1, early_stopping_patience=2,
                      save_total_limit=1)
    msgs: list[str] = []
    res = run_training(cfg, echo=msgs.append)
    assert res.stopped_early and res.global_step == 4 and res.best_eval_loss == 0.5
    assert res.best_checkpoint is not None and res.best_checkpoint.name == "checkpoint-2"
    assert any("early stopping at step 4" in m for m in msgs)
    best = load_file(str(res.best_checkpoint / "model.safetensors"))
    final = _trainable(res.model)
    assert best.keys() == final.keys()
    assert all(torch.equal(best[k], final[k]) for k in best), "final model is not the best checkpoint"
    evals = [r for r in read_jsonl(tmp_path / "out" / "metrics.jsonl") if "eval_loss" in r]
    assert [r["eval_loss"] for r in evals] == [1.0, 0.5, 0.7, 0.6]
