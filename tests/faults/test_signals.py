"""SIGINT / SIGTERM while training: the step finishes, a checkpoint is saved, the resume command is
printed, the exit code is 130 / 143, the handlers are restored, and resuming continues exactly."""
from __future__ import annotations

import os
import signal

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fault_helpers import quiet
from train_helpers import tiny_config, write_text_prefs
from vlmdpo.cli import main
from vlmdpo.train.loop import run_training


def _config_file(tmp_path, data, **extra):
    values = dict(model_name_or_path="tiny:causal_lm", dataset=str(data), output_dir=str(tmp_path / "out"),
                  max_steps=4, per_device_train_batch_size=2, learning_rate=5e-3, logging_steps=1,
                  save_steps=None, progress_bar=False, max_length=256, seed=7, lora_rank=4, lora_alpha=8, **extra)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_prints_resume_command_and_resumes(tmp_path, monkeypatch, capsys, signum, code):
    import vlmdpo.train.loop as loop_mod

    data = write_text_prefs(tmp_path / "prefs.jsonl", n=8)
    config = _config_file(tmp_path, data)
    real, calls = loop_mod.train_step, {"n": 0}

    def signalled(micro, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signum)  # arrives mid-step: the step must still complete
        return real(micro, **kw)

    monkeypatch.setattr(loop_mod, "train_step", signalled)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(["train", str(config)]) == code
    err = capsys.readouterr().err
    out = tmp_path / "out"
    assert (out / "checkpoint-2" / "trainer_state.json").is_file() and not (out / "checkpoint-3").exists()
    assert f"stopped by {signal.Signals(signum).name} after step 2" in err and "resume_from_checkpoint=auto" in err
    assert str(out / "checkpoint-2") in err and "internal error" not in err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    monkeypatch.setattr(loop_mod, "train_step", real)

    assert main(["train", str(config), "resume_from_checkpoint=auto"]) == 0
    if signum == signal.SIGINT:  # the interrupted run ends where an uninterrupted one does
        run_training(tiny_config(tmp_path / "whole", data), **quiet)
        whole = load_file(str(tmp_path / "whole" / "out" / "adapter_model.safetensors"))
        resumed = load_file(str(out / "adapter_model.safetensors"))
        assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
