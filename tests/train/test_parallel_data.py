"""dataset_num_proc and dataloader_num_workers: encoding off the training step, same results."""
from __future__ import annotations

import io
from functools import partial
from pathlib import Path

import pytest

from train_helpers import SAMPLE_IMAGES, tiny_config
from vlmdpo.encode import encode_pair
from vlmdpo.model.families import adapter_for
from vlmdpo.model.tiny import build_tiny_config, build_tiny_processor, tiny_image
from vlmdpo.train.data import fit_check
from vlmdpo.train.loop import run_training
from vlmdpo.types import ImageRef, PreferenceRecord, RowSource


def _record(i: int, image: Path, chosen: str) -> PreferenceRecord:
    def turn(role, *parts):
        return [{"role": role, "content": list(parts)}]

    return PreferenceRecord(
        id=f"r{i}", prompt=turn("user", {"type": "image"}, {"type": "text", "text": f"What is it, {i}?"}),
        chosen=turn("assistant", {"type": "text", "text": chosen}),
        rejected=turn("assistant", {"type": "text", "text": "A dog."}),
        images=[ImageRef(path=str(image), origin=image.name)], source=RowSource("prefs.jsonl", i + 1))


@pytest.fixture
def mixed_records(tmp_path) -> list[PreferenceRecord]:
    """Kept pairs, pairs too long for max_length, and pairs whose image is truncated (bad data)."""
    good = tmp_path / "cat.png"
    tiny_image(size=(64, 64)).save(good)
    buf = io.BytesIO()
    tiny_image(size=(64, 64)).save(buf, format="PNG")
    broken = tmp_path / "broken.png"
    broken.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    long = "It is " + " ".join(["very"] * 300) + " long."
    return [_record(i, broken if i % 5 == 1 else good, long if i % 7 == 3 else "A cat.") for i in range(23)]


def test_fit_check_with_two_processes_equals_one(mixed_records):
    encode = partial(encode_pair, processor=build_tiny_processor("idefics3"),
                     family=adapter_for(build_tiny_config("idefics3")), max_length=120, truncation="drop")
    positions = list(range(1, len(mixed_records)))  # not starting at 0: positions are kept, not renumbered
    serial = fit_check(mixed_records, encode, positions, num_proc=1)
    parallel = fit_check(mixed_records, encode, positions, num_proc=2)
    kept, dropped, bad = serial
    assert kept and dropped and bad  # all three outcomes are exercised
    assert parallel == serial


def test_dataloader_workers_give_the_same_losses(tmp_path):
    def losses(workers: int, name: str) -> list[float]:
        cfg = tiny_config(tmp_path / name, SAMPLE_IMAGES, model_name_or_path="tiny:idefics3", max_steps=2,
                          dataloader_num_workers=workers, dataset_num_proc=workers or None)
        run_training(cfg, echo=lambda _m: None)
        from train_helpers import read_jsonl

        return [r["loss"] for r in read_jsonl(tmp_path / name / "out" / "metrics.jsonl") if "loss" in r]

    zero = losses(0, "w0")
    assert len(zero) == 2
    assert losses(2, "w2") == zero
