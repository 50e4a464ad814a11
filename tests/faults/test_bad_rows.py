"""on_invalid covers bad data found while encoding (a truncated image that passes the header
check, another model's chat template): an error listing file:row, field and fix, or a skip
reported under "bad data" and written to rejected_rows.jsonl; length drops keep their heading."""
from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlmdpo.data.validate import DataError
from vlmdpo.encode import LENGTH_KINDS, EncodeError, encode_pair, is_length_problem
from vlmdpo.model.families import adapter_for
from vlmdpo.model.tiny import build_tiny_config, build_tiny_processor, tiny_image
from vlmdpo.train.stages import fit_pairs
from vlmdpo.types import ImageRef, PreferenceRecord, RowSource


def _truncated_png(path: Path) -> Path:
    buf = io.BytesIO()
    tiny_image(size=(64, 64)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # header intact, pixel data cut
    return path


def _record(i: int, image: Path, folder: Path, chosen: str = "A cat.") -> PreferenceRecord:
    def turn(role, *parts):
        return [{"role": role, "content": list(parts)}]

    return PreferenceRecord(
        id=f"r{i}", prompt=turn("user", {"type": "image"}, {"type": "text", "text": "What is it?"}),
        chosen=turn("assistant", {"type": "text", "text": chosen}),
        rejected=turn("assistant", {"type": "text", "text": "A dog."}),
        images=[ImageRef(path=str(image), origin=image.name)], source=RowSource(str(folder / "prefs.jsonl"), i + 1))


@pytest.fixture
def records(tmp_path):
    good = tmp_path / "cat.png"
    tiny_image(size=(64, 64)).save(good)
    bad = _truncated_png(tmp_path / "broken.png")
    long = "It is " + " ".join(["very"] * 300) + " long."
    return [_record(0, good, tmp_path), _record(1, bad, tmp_path), _record(2, good, tmp_path, chosen=long),
            _record(3, good, tmp_path)]


def _encode():
    proc, ad = build_tiny_processor("idefics3"), adapter_for(build_tiny_config("idefics3"))
    return lambda rec: encode_pair(rec, proc, ad, max_length=120, truncation="drop")


ACC = SimpleNamespace(num_processes=1, process_index=0, is_main_process=True)


def test_truncated_image_is_an_encode_error_naming_file_and_field(records):
    with pytest.raises(EncodeError) as e:
        _encode()(records[1])
    assert e.value.kind == "image" and e.value.field == "images" and not is_length_problem(e.value.kind)
    assert "broken.png" in str(e.value) and "prefs.jsonl:2" in str(e.value)


def test_length_kinds_are_one_set():
    assert {"too_long", "prompt_too_long"} <= LENGTH_KINDS
    assert not any(is_length_problem(k) for k in ("image", "template_mismatch", "video_unsupported", "processor"))


def test_on_invalid_error_stops_with_every_bad_pair_listed(records, tmp_path):
    said: list[str] = []
    with pytest.raises(DataError) as e:
        fit_pairs(records, [], _encode(), ACC, tmp_path / "out", said.append, "error")
    msg = str(e.value)
    assert "prefs.jsonl:2" in msg and "field 'images'" in msg and "broken.png" in msg and "on_invalid: skip" in msg
    assert "prefs.jsonl:3" not in msg  # the long pair is a length drop, not bad data


def test_on_invalid_skip_reports_bad_data_apart_from_length_drops(records, tmp_path):
    out = tmp_path / "out"
    said: list[str] = []
    keep, _, dropped = fit_pairs(records, [], _encode(), ACC, out, said.append, "skip")
    assert keep == [0, 3] and [d.id for d in dropped] == ["r2"]
    text = "\n".join(said)
    length_part = text[text.index("do not fit (max_length / truncation)"):]
    bad_part = text[text.index("bad data"):]
    assert "broken.png" in bad_part.split("do not fit")[0] and "broken.png" not in length_part.split("bad data")[0]
    rejected = [json.loads(x) for x in (out / "rejected_rows.jsonl").read_text().splitlines()]
    assert [(r["row"], r["field"], r["kind"]) for r in rejected] == [(2, "images", "image")]
    assert rejected[0]["fix"] and rejected[0]["file"].endswith("prefs.jsonl")
    dropped_rows = [json.loads(x) for x in (out / "dropped_pairs.jsonl").read_text().splitlines()]
    assert [r["id"] for r in dropped_rows] == ["r2"]


def test_training_with_a_truncated_image_and_on_invalid_error_fails_at_its_row(tmp_path):
    from vlmdpo.config import load_config
    from vlmdpo.train import run_training

    tiny_image(size=(64, 64)).save(tmp_path / "cat.png")
    _truncated_png(tmp_path / "broken.png")
    rows = [{"prompt": [{"role": "user", "content": "<image>What is it?"}],
             "chosen": [{"role": "assistant", "content": f"A cat {i}."}],
             "rejected": [{"role": "assistant", "content": "A dog."}],
             "images": ["broken.png" if i == 2 else "cat.png"]} for i in range(4)]
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(None, dict(model_name_or_path="tiny:idefics3", dataset=str(data), output_dir=str(tmp_path / "o"),
                                 max_steps=1, per_device_train_batch_size=2, save_steps=None, progress_bar=False,
                                 max_length=256, lora_rank=4, lora_alpha=8, on_invalid="error"))
    with pytest.raises(DataError) as e:
        run_training(cfg, echo=lambda _m: None)
    assert "prefs.jsonl:3" in str(e.value) and "broken.png" in str(e.value)
