"""Loading a checkpoint never unpickles: pickles planted in a checkpoint (accelerate's file names)
never run, and a checkpoint that only has pickled state is refused with a clear message."""
from __future__ import annotations

import pickle
import shutil

import pytest

from fault_helpers import quiet
from train_helpers import tiny_config, write_text_prefs
from vlmdpo.errors import FixableError
from vlmdpo.train.loop import run_training
from vlmdpo.train.state_files import MODEL

PLANTED = ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin", "scaler.pt",
           "pytorch_model.bin")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # runs at unpickling time
        return (open, (str(self.marker), "w"))


def test_planted_pickles_never_run(tmp_path):
    data = write_text_prefs(tmp_path / "prefs.jsonl", n=8)
    run_training(tiny_config(tmp_path, data, max_steps=2, save_steps=1), **quiet)
    ckpt = tmp_path / "out" / "checkpoint-2"
    marker = tmp_path / "PWNED"
    for name in PLANTED:
        (ckpt / name).write_bytes(pickle.dumps(_Payload(marker)))
    res = run_training(tiny_config(tmp_path, data, max_steps=3, save_steps=1, resume_from_checkpoint="auto",
                                   resume_allow_changes=["max_steps"]), **quiet)
    assert res.global_step == 3 and not marker.exists()

    old = tmp_path / "out" / "checkpoint-1"  # as an older vlmdpo (accelerate) wrote it: pickles only
    for p in old.iterdir():
        if p.name not in (MODEL, "trainer_state.json"):
            p.unlink()
    for name in PLANTED:
        (old / name).write_bytes(pickle.dumps(_Payload(marker)))
    shutil.rmtree(tmp_path / "out" / "checkpoint-2")
    shutil.rmtree(tmp_path / "out" / "checkpoint-3")
    with pytest.raises(FixableError, match="older vlmdpo.*pickle files, which are not loaded"):
        run_training(tiny_config(tmp_path, data, max_steps=3, resume_from_checkpoint="auto"), **quiet)
    assert not marker.exists()
