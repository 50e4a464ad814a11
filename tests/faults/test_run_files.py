"""Files a run writes appear whole: a kill during the final save leaves no empty tokenizer file.
Settings that cannot work fail before training, naming the key: a missing tracker, an unwritable output_dir."""
from __future__ import annotations

import importlib.util

import pytest

from fault_helpers import quiet
from train_helpers import tiny_config
from vlmdpo.errors import FixableError
from vlmdpo.train.loop import run_training


def test_kill_during_final_save_leaves_no_partial_file(tmp_path, text_prefs, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    def dies_midway(self, folder, *a, **k):
        from pathlib import Path

        (Path(folder) / "tokenizer_config.json").write_text("")  # what a kill mid-write leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_config(tmp_path, text_prefs, max_steps=1), **quiet)
    out = tmp_path / "out"
    assert not (out / "tokenizer_config.json").exists()
    assert not [p for p in out.rglob("*") if p.is_file() and p.stat().st_size == 0 and p.suffix == ".json"]
    assert not list(out.glob(".tmp-*"))


def test_report_to_a_missing_tracker_is_a_config_error(tmp_path, text_prefs, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ValueError, match=r"report_to: wandb is not installed; pip install wandb, or set report_to: none"):
        tiny_config(tmp_path, text_prefs, report_to="wandb")


def test_unwritable_output_dir_names_the_key(tmp_path, text_prefs):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FixableError, match=r"output_dir: cannot write to '.*a_file/out'"):
        run_training(tiny_config(tmp_path, text_prefs, output_dir=str(tmp_path / "a_file" / "out")), **quiet)
