"""Two CPU processes under `accelerate launch` train like one process with the same global batch."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train_helpers import SAMPLE_IMAGES, read_jsonl, tiny_config, write_text_prefs
from vlmdpo.train.loop import run_training

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two(tmp_path: Path, values: dict) -> tuple[dict, dict, str]:
    """Train with 2 CPU processes; each rank's trainable weights, and what rank 0 said."""
    # accelerate 1.x spawns several CPU processes with `--cpu` only through mpirun; without MPI,
    # the torchrun-based launcher plus ACCELERATE_USE_CPU gives real multi-CPU DDP (gloo).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "true"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(WORKER), json.dumps(values), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt") for i in (0, 1))
    return r0, r1, (tmp_path / "rank0.log").read_text()


def _assert_same_training(r0: dict, r1: dict, single) -> None:
    w1 = {n: p.detach() for n, p in single.model.named_parameters() if p.requires_grad}
    assert r0.keys() == r1.keys() == w1.keys()
    for k in w1:
        assert torch.equal(r0[k], r1[k]), f"ranks disagree on {k}"
        # Gradients agree to float rounding (all-reduce vs one batch mean); Adam's g/sqrt(v) can
        # magnify that for near-zero entries, so the bound is 1% of one lr-sized step. Training
        # on other pairs than the single process would be off by whole steps (~lr = 5e-3).
        torch.testing.assert_close(r0[k], w1[k], rtol=0, atol=5e-5, msg=lambda m: f"{k}: {m}")
    assert not torch.equal(w1[next(k for k in w1 if "lora_B" in k)], torch.zeros(1))  # something trained


@pytest.mark.slow
def test_two_processes_match_one_process_with_same_global_batch(tmp_path):
    text_prefs = write_text_prefs(tmp_path / "prefs.jsonl", n=11)  # 8 train + 3 eval (uneven over 2 ranks)
    settings = dict(max_steps=2, learning_rate=5e-3, seed=7, lora_dropout=0.0, val_size=3, eval_steps=2)
    values = dict(model_name_or_path="tiny:causal_lm", dataset=str(text_prefs), output_dir=str(tmp_path / "ddp"),
                  per_device_train_batch_size=2, progress_bar=False, max_length=256, lora_rank=4, lora_alpha=8,
                  logging_steps=1, **settings)
    r0, r1, said = _launch_two(tmp_path, values)
    assert "fast paths: " in said and "shared_prefix" in said  # DDP runs the fast layout too

    single = run_training(tiny_config(tmp_path / "one", text_prefs, per_device_train_batch_size=4, **settings),
                          echo=lambda _m: None)
    _assert_same_training(r0, r1, single)
    ddp_rows = read_jsonl(tmp_path / "ddp" / "metrics.jsonl")  # written by rank 0 only
    one_rows = read_jsonl(tmp_path / "one" / "out" / "metrics.jsonl")
    assert [r["step"] for r in ddp_rows] == [r["step"] for r in one_rows] == [1, 2, 2]
    for a, b in zip(ddp_rows, one_rows):
        for k in ("loss", "rewards/accuracies", "eval_loss", "eval_rewards/margins"):
            if k in b:
                assert a[k] == pytest.approx(b[k], abs=1e-5), k
    assert ddp_rows[0]["pairs/s"] > 0 and one_rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)


@pytest.mark.slow
def test_two_processes_train_a_vlm_with_trainable_vision_like_one_process(tmp_path):
    """The fast layout under DDP with the hardest case for gradient sync: the vision tower and
    projector train in full, LoRA on the language model, image pairs."""
    settings = dict(max_steps=2, learning_rate=5e-3, seed=7, lora_dropout=0.0, freeze_vision_tower=False,
                    freeze_projector=False)
    values = dict(model_name_or_path="tiny:idefics3", dataset=str(SAMPLE_IMAGES), output_dir=str(tmp_path / "ddp"),
                  per_device_train_batch_size=2, progress_bar=False, max_length=512, lora_rank=4, lora_alpha=8,
                  logging_steps=1, save_steps=None, **settings)
    r0, r1, said = _launch_two(tmp_path, values)
    assert "fast paths: " in said and "shared_prefix" in said
    single = run_training(tiny_config(tmp_path / "one", SAMPLE_IMAGES, model_name_or_path="tiny:idefics3",
                                      per_device_train_batch_size=4, max_length=512, **settings), echo=lambda _m: None)
    _assert_same_training(r0, r1, single)
    assert any("vision_model" in k for k in r0)  # the tower really trained under DDP
