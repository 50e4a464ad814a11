"""NaN recovery: the message names a checkpoint that resumes (finite weights that already gave a
finite loss), resuming it with a lower learning rate works, and non-finite weights are never saved."""
from __future__ import annotations

import pytest
import torch

from fault_helpers import quiet
from train_helpers import tiny_config, write_text_prefs
from vlmdpo.train import checkpoint as ckpt
from vlmdpo.train.loop import run_training
from vlmdpo.train.step import TrainingError


def test_nan_names_a_checkpoint_that_resumes(tmp_path, monkeypatch):
    import vlmdpo.train.loop as loop_mod

    data = write_text_prefs(tmp_path / "prefs.jsonl", n=8)
    real, calls = loop_mod.train_step, {"n": 0}

    def blow_up(micro, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # the update of step 3 leaves weights of 1e30: finite, but step 4's loss is not
            out = real(micro, **kw)
            with torch.no_grad():
                for n, p in kw["model"].named_parameters():
                    if p.requires_grad:
                        p.fill_(1e30)
            return out
        return real(micro, **kw)

    monkeypatch.setattr(loop_mod, "train_step", blow_up)
    with pytest.raises(TrainingError) as e:
        run_training(tiny_config(tmp_path, data, max_steps=6, save_steps=1), **quiet)
    text = str(e.value)
    out = tmp_path / "out"
    assert "step 4" in text and f"{out / 'checkpoint-3'} holds the weights that gave this" in text
    assert f"Last good checkpoint: {out / 'checkpoint-2'}" in text and "resume_allow_changes=[learning_rate]" in text
    assert ckpt.finite_weights(out / "checkpoint-2")

    monkeypatch.setattr(loop_mod, "train_step", real)
    res = run_training(tiny_config(tmp_path, data, max_steps=6, save_steps=1, learning_rate=1e-3,
                                   resume_from_checkpoint=str(out / "checkpoint-2"),
                                   resume_allow_changes=["learning_rate"]), **quiet)
    assert res.global_step == 6
    assert all(torch.isfinite(p).all() for p in res.model.parameters())


def test_non_finite_weights_are_never_saved(tmp_path, monkeypatch):
    import vlmdpo.train.loop as loop_mod

    data = write_text_prefs(tmp_path / "prefs.jsonl", n=8)
    real, calls = loop_mod.train_step, {"n": 0}

    def poison(micro, **kw):
        out = real(micro, **kw)
        calls["n"] += 1
        if calls["n"] == 2:
            with torch.no_grad():
                next(p for p in kw["model"].parameters() if p.requires_grad).view(-1)[0] = float("inf")
        return out

    monkeypatch.setattr(loop_mod, "train_step", poison)
    with pytest.raises(TrainingError, match="weights are not finite.*no checkpoint was saved") as e:
        run_training(tiny_config(tmp_path, data, max_steps=4, save_steps=1), **quiet)
    assert f"Last good checkpoint: {tmp_path / 'out' / 'checkpoint-1'};" in str(e.value)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "out")] == ["checkpoint-1"]
