"""Two CPU processes under `accelerate launch` train like one process with the same global batch."""
from __future__ import annotations

import pytest

from train_helpers import SAMPLE_IMAGES, read_jsonl, tiny_config, write_text_prefs
from two_procs import assert_same_training, launch_two
from vlmdpo.train.loop import run_training


@pytest.mark.slow
def test_two_processes_match_one_process_with_same_global_batch(tmp_path):
    text_prefs = write_text_prefs(tmp_path / "prefs.jsonl", n=11)  # 8 train + 3 eval (uneven over 2 ranks)
    settings = dict(max_steps=2, learning_rate=5e-3, seed=7, lora_dropout=0.0, val_size=3, eval_steps=2)
    values = dict(model_name_or_path="tiny:causal_lm", dataset=str(text_prefs), output_dir=str(tmp_path / "ddp"),
                  per_device_train_batch_size=2, progress_bar=False, max_length=256, lora_rank=4, lora_alpha=8,
                  logging_steps=1, **settings)
    r0, r1, said = launch_two(tmp_path, values)
    assert "fast paths: " in said and "shared_prefix" in said  # DDP runs the fast layout too

    single = run_training(tiny_config(tmp_path / "one", text_prefs, per_device_train_batch_size=4, **settings),
                          echo=lambda _m: None)
    assert_same_training(r0, r1, single)
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
    r0, r1, said = launch_two(tmp_path, values)
    assert "fast paths: " in said and "shared_prefix" in said
    single = run_training(tiny_config(tmp_path / "one", SAMPLE_IMAGES, model_name_or_path="tiny:idefics3",
                                      per_device_train_batch_size=4, max_length=512, **settings), echo=lambda _m: None)
    assert_same_training(r0, r1, single)
    assert any("vision_model" in k for k in r0)  # the tower really trained under DDP
