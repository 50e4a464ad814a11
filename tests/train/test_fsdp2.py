"""FSDP2 (accelerate `fsdp_version: 2`) on two CPU processes trains the fast layout exactly like
one process with the same global batch, and saves whole tensors.

Each case reaches a different place where the fast forward uses parameters outside the plain
forward's path: vision features encoded once and shared by the reference (no grad) and vision
features encoded once per pair with grad (both from the pre-hook inside the model's call), and
the LM head applied to completion positions while it trains (full fine-tuning).
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import SAMPLE_IMAGES, read_jsonl, tiny_config
from two_procs import FSDP2, assert_same_training, free_port, launch_two, vision_check
from vlmdpo.train.loop import run_training

SETTINGS = dict(max_steps=2, learning_rate=5e-3, seed=7, max_length=512)


def _train_both(tmp_path, model: str, per_device: dict, global_batch: int, **settings):
    """FSDP2 on 2 processes with `per_device` batching vs one process with the same global batch."""
    settings = {**SETTINGS, **settings}
    values = dict(model_name_or_path=model, dataset=str(SAMPLE_IMAGES), output_dir=str(tmp_path / "fsdp"),
                  progress_bar=False, logging_steps=1, save_steps=None, **per_device, **settings)
    if settings.get("finetuning_type") != "full":
        values.update(lora_rank=4, lora_alpha=8)
    r0, r1, said = launch_two(tmp_path, values, FSDP2)
    assert "distributed_type: FSDP" in said  # sharded for real, not DDP
    single = run_training(tiny_config(tmp_path / "one", SAMPLE_IMAGES, model_name_or_path=model,
                                      per_device_train_batch_size=global_batch, **settings), echo=lambda _m: None)
    losses = [[r["loss"] for r in read_jsonl(tmp_path / run / "metrics.jsonl")] for run in ("fsdp", "one/out")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5) and len(losses[0]) == 2 and losses[0][1] != losses[0][0]
    return r0, r1, said, single


def _assert_same_files(fsdp_file, one_file) -> None:
    """The saved weights are whole tensors (the single run's shapes) with the trained values."""
    a, b = load_file(fsdp_file), load_file(one_file)
    assert a.keys() == b.keys()
    for k in b:
        assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=5e-5, msg=lambda m: f"{k}: {m}")


@pytest.mark.slow
def test_fsdp2_lora_with_shared_frozen_vision_matches_one_process(tmp_path):
    """With gradient accumulation: FSDP2's gradient sync is skipped on the first micro-batch."""
    r0, r1, said, single = _train_both(tmp_path, "tiny:idefics3", dict(per_device_train_batch_size=2,
                                       gradient_accumulation_steps=2), 8, lora_dropout=0.0, freeze_projector=True)
    assert "fast paths: share_vision, shared_prefix, completion_only_logits" in said  # no fallback
    assert_same_training(r0, r1, single)
    _assert_same_files(tmp_path / "fsdp" / "adapter_model.safetensors",
                       tmp_path / "one" / "out" / "adapter_model.safetensors")


@pytest.mark.slow
def test_fsdp2_full_finetuning_with_trainable_vision_matches_one_process(tmp_path):
    """Plain rows (shared_prefix off): each pair's images encoded once, with grad; the head trains."""
    r0, r1, said, single = _train_both(tmp_path, "tiny:qwen2_vl", dict(per_device_train_batch_size=2), 4,
                                       finetuning_type="full", learning_rate=1e-4,
                                       shared_prefix=False, padding_free=False, freeze_vision_tower=False)
    assert "fast paths: share_vision, completion_only_logits" in said
    assert any("visual" in k for k in r0) and any("lm_head" in k for k in r0)  # both really trained
    assert_same_training(r0, r1, single)
    _assert_same_files(tmp_path / "fsdp" / "model.safetensors", tmp_path / "one" / "out" / "model.safetensors")


def test_text_only_beside_image_batches_when_sharded_is_a_clear_error():
    """One process's micro-batch text-only while the other's has images: the vision units'
    all-gather would wait forever, so both processes stop with what to do instead (seen end to end
    with tiny:idefics3, per_device_train_batch_size 1, under fsdp2.yaml)."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    mp.start_processes(vision_check, args=(free_port(), errors), nprocs=2, join=True, start_method="spawn")
    said = []
    while not errors.empty():
        said.append(errors.get())
    assert len(said) == 2  # both processes stopped with the error
    assert all("all processes must have images or none" in s and "ddp.yaml" in s for s in said)
    assert {"has some" in s for s in said} == {True, False}  # each says which side it is on


def _batching(rank: int, lockstep: bool):
    from vlmdpo.train.data import StepBatch
    from vlmdpo.train.run import Batching

    class Rows:  # a dataset of positions; a batch is the list of its positions
        def __getitem__(self, i):
            return i

    def collate(items):
        return StepBatch(batch=type("B", (), {"to": lambda self, _d: self, "rows": items})(), indices=list(items))

    return Batching(collate, device="cpu", world_size=2, rank=rank, train_batch_size=1, eval_batch_size=1,
                    num_workers=0, seed=0, lockstep=lockstep), Rows()


@pytest.mark.parametrize("lockstep", [False, True])
def test_sharded_processes_run_as_many_eval_batches_and_count_each_pair_once(lockstep):
    """5 pairs over 2 processes: 3 batches and 2; under FSDP the second runs a third, counted nowhere
    (else the first waits forever in its third forward's all-gather)."""
    counts, counted = [], []
    for rank in (0, 1):
        batching, rows = _batching(rank, lockstep)
        out = list(batching.eval_batches(rows, [10, 11, 12, 13, 14]))
        counts.append(len(out))
        counted += [i for sb in out if sb.counted for i in sb.indices]
    assert counts == ([3, 3] if lockstep else [3, 2])
    assert sorted(counted) == [10, 11, 12, 13, 14]
