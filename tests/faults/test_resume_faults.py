"""Resume safety: a kill -9 at a random write (also inside a checkpoint save) resumes bit-identical;
a checkpoint of another run is refused with the differences; allowed changes are applied and said."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from fault_helpers import quiet, same_weights
from train_helpers import REPO, tiny_config, write_text_prefs
from vlmdpo.config import load_config
from vlmdpo.errors import FixableError
from vlmdpo.train.loop import run_training

KILLER = r"""
import json, os, signal, sys
from vlmdpo import atomic
from vlmdpo.config import load_config
from vlmdpo.train.loop import run_training

values, kill_at = json.loads(sys.argv[1]), int(sys.argv[2])
real, calls = atomic.write_bytes, {"n": 0}

def write_then_die(path, data):
    calls["n"] += 1
    if calls["n"] == kill_at:  # half of this file on disk under its temporary name, then SIGKILL
        with open(path.parent / f".{path.name}.partial.tmp", "wb") as f:
            f.write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, data)

atomic.write_bytes = write_then_die
run_training(load_config(None, values), echo=lambda _m: None)
"""

COMMON = dict(per_device_train_batch_size=1, gradient_accumulation_steps=2, max_steps=5, save_steps=1,
              lora_dropout=0.1, loss_type=["sigmoid", "bco_pair"])


def test_kill_9_at_a_random_write_then_resume_is_bit_identical(tmp_path):
    data = write_text_prefs(tmp_path / "prefs.jsonl", n=6)
    ref = run_training(tiny_config(tmp_path / "ref", data, **COMMON), **quiet)
    # 8 files per checkpoint: a kill anywhere in the first four saves, often mid-file
    kill_at = random.Random().randint(2, 32)
    cfg = tiny_config(tmp_path / "killed", data, **COMMON)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLER, json.dumps(cfg.model_dump(mode="json")), str(kill_at)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, (kill_at, proc.stderr[-2000:])
    resumed = run_training(tiny_config(tmp_path / "killed", data, resume_from_checkpoint="auto", **COMMON), **quiet)
    assert resumed.global_step == 5
    assert same_weights(ref.model, resumed.model), f"killed at write {kill_at}: resumed weights differ"


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-step run with checkpoints 1 and 2 (shared: tests resume into copies)."""
    root = tmp_path_factory.mktemp("run")
    data = write_text_prefs(root / "prefs.jsonl", n=8)
    run_training(tiny_config(root, data, max_steps=2, save_steps=1), **quiet)
    return root, data


def _copy_run(finished, tmp_path) -> tuple[Path, Path]:
    import shutil

    root, data = finished
    shutil.copytree(root / "out", tmp_path / "out")
    return tmp_path, data


def test_auto_refuses_a_different_runs_checkpoint(finished, tmp_path):
    root, data = _copy_run(finished, tmp_path)
    with pytest.raises(FixableError) as e:
        run_training(tiny_config(root, data, max_steps=4, learning_rate=1e-3, seed=8,
                                 resume_from_checkpoint="auto"), **quiet)
    text = str(e.value)
    assert "holds checkpoints of a different run" in text and str(root / "out") in text
    assert "learning_rate: 0.005 -> 0.001" in text and "seed: 7 -> 8" in text and "max_steps: 2 -> 4" in text
    assert "new output_dir" in text and "resume_allow_changes=[" in text


def test_changed_data_or_lora_rank_is_refused_never_an_internal_error(finished, tmp_path):
    root, data = _copy_run(finished, tmp_path)
    other = write_text_prefs(tmp_path / "other.jsonl", n=9)
    with pytest.raises(FixableError, match=r"dataset: train_pairs 8.* -> train_pairs 9"):
        run_training(tiny_config(root, other, max_steps=2, resume_from_checkpoint="auto"), **quiet)
    with pytest.raises(FixableError, match=r"lora_rank: 4 -> 8.*new output_dir \(lora_rank cannot change"):
        run_training(tiny_config(root, data, max_steps=2, lora_rank=8, resume_from_checkpoint="auto"), **quiet)
    with pytest.raises(ValueError, match="resume_allow_changes: lora_rank cannot change on resume"):
        load_config(None, dict(model_name_or_path="tiny:causal_lm", dataset=str(data),
                               resume_allow_changes=["lora_rank"]))


def test_allowed_learning_rate_change_reaches_the_optimizer_and_schedule(finished, tmp_path, monkeypatch):
    import vlmdpo.train.loop as loop_mod

    root, data = _copy_run(finished, tmp_path)
    seen: list[float] = []
    real = loop_mod.train_step

    def spy(micro, **kw):
        seen.append(kw["optimizer"].param_groups[0]["lr"])
        return real(micro, **kw)

    monkeypatch.setattr(loop_mod, "train_step", spy)
    said: list[str] = []
    res = run_training(tiny_config(root, data, max_steps=4, learning_rate=1e-3, resume_from_checkpoint="auto",
                                   resume_allow_changes=["learning_rate", "max_steps"]), echo=said.append)
    assert res.global_step == 4
    assert any("resumed with changes" in m and "learning_rate: 0.005 -> 0.001" in m for m in said)
    # linear decay over the new 4 steps from the new peak, continued at step 2
    assert seen == pytest.approx([1e-3 * 2 / 4, 1e-3 * 1 / 4])
