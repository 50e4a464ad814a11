"""A new run into a previous run's output_dir is refused unless it resumes or overwrites; both options named."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from vlmdpo.errors import FixableError
from vlmdpo.train.output_dir import check_output_dir, previous_run_files


def _cfg(resume=None, overwrite=False):
    return SimpleNamespace(resume_from_checkpoint=resume, overwrite_output_dir=overwrite)


@pytest.mark.parametrize("made", ["checkpoint-3/", "metrics.jsonl", "adapter_config.json", "model.safetensors"])
def test_a_previous_runs_files_are_an_error_that_names_both_options(tmp_path: Path, made: str):
    path = tmp_path / made.rstrip("/")
    path.mkdir() if made.endswith("/") else path.write_text("{}")
    with pytest.raises(FixableError) as exc:
        check_output_dir(_cfg(), tmp_path)
    text = str(exc.value)
    assert f"output_dir: '{tmp_path}' holds a previous run ({path.name})" in text
    assert "resume_from_checkpoint: auto" in text and "overwrite_output_dir: true" in text
    check_output_dir(_cfg(resume="auto"), tmp_path)
    check_output_dir(_cfg(overwrite=True), tmp_path)


def test_missing_empty_or_unrelated_folders_are_fine(tmp_path: Path):
    check_output_dir(_cfg(), tmp_path / "new")
    check_output_dir(_cfg(), tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "checkpoints-old").mkdir()
    assert previous_run_files(tmp_path) == []


def test_training_twice_into_one_output_dir(tmp_path: Path, text_prefs: Path):
    from train_helpers import tiny_config
    from vlmdpo.api import train

    cfg = tiny_config(tmp_path, text_prefs, max_steps=1, save_steps=1)
    train(cfg)
    with pytest.raises(FixableError, match="holds a previous run .*checkpoint-1"):
        train(cfg)
    assert train(cfg, overwrite_output_dir=True).global_step == 1
