"""Sources (jsonl, json, parquet, folders, save_to_disk, memory, hub), detection, skip mode."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from data_helpers import IMG, make_image, png_bytes, text, trl_row, user, write_json, write_jsonl
from vlmdpo.data.load import DataError, LoadResult, iter_preferences, load_preferences
from vlmdpo.types import PreferenceRecord, RowError

SWIFT = {"messages": [{"role": "user", "content": "<image>Color?"}, {"role": "assistant", "content": "Red."}],
         "images": ["img/0.jpg"], "rejected_response": "Blue."}


def test_detection_note_and_explicit_format_wins(img_dir):
    path = write_jsonl(img_dir / "s.jsonl", [SWIFT])
    result = load_preferences(path)
    assert result.notes == [f"{path}: format detected as swift (keys messages, rejected_response)"]
    with pytest.raises(DataError) as exc:
        load_preferences(path, format="trl")
    assert exc.value.errors[0].kind == "missing_field"
    assert load_preferences(path, format="ms-swift").formats == {str(path): "swift"}


def test_unknown_format_name_is_value_error(tmp_path):
    with pytest.raises(ValueError, match="unknown format 'dpo'.*trl, trl_standard"):
        load_preferences(write_jsonl(tmp_path / "p.jsonl", [trl_row()]), format="dpo")


def test_detection_uses_first_recognizable_row(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"junk": 1}, trl_row()], raw_lines={0: "{oops"})
    result = load_preferences(path, on_invalid="skip")
    assert [e.kind for e in result.errors] == ["invalid_json", "unknown_format"]
    assert [e.row for e in result.errors] == [1, 2]
    assert (result.n_read, result.n_kept, result.n_skipped) == (3, 1, 2)
    assert result.formats == {str(path): "trl"}


def test_json_list_data_key_and_jsonl_inside_json(tmp_path):
    a = write_json(tmp_path / "a.json", [trl_row(), trl_row()])
    b = write_json(tmp_path / "b.json", {"data": [trl_row()]})
    c = tmp_path / "c.json"
    c.write_text(json.dumps(trl_row()) + "\n" + json.dumps(trl_row()) + "\n")
    assert load_preferences([a, b, c]).n_kept == 5


def test_broken_json_file_is_a_source_error(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[{"prompt": "x"}')
    with pytest.raises(DataError) as exc:
        load_preferences(path)
    (err,) = exc.value.errors
    assert err.kind == "source" and err.row == 0 and "not valid JSON" in err.message and str(path) in str(err)


def test_missing_path_is_clear(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_preferences(tmp_path / "nope.jsonl")


def test_hub_name_that_cannot_load_is_clear(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    with pytest.raises(DataError) as exc:
        load_preferences("no-such-user/no-such-dataset-vlmdpo")
    (err,) = exc.value.errors
    assert err.kind == "source" and "hugging face hub failed" in err.message.lower()
    assert "Traceback" not in str(exc.value)


def test_directory_sorted_with_mixed_formats_and_dataset_info(img_dir):
    write_jsonl(img_dir / "b_swift.jsonl", [SWIFT])
    write_json(img_dir / "a_trl.json", [trl_row()])
    write_jsonl(img_dir / "sub" / "c.jsonl", [{"ask": "Hi?", "good": "Hello", "bad": "Go"}])
    write_json(img_dir / "dataset_info.json", {
        "mine": {"file_name": "sub/c.jsonl", "formatting": "alpaca", "ranking": True,
                 "columns": {"prompt": "ask", "chosen": "good", "rejected": "bad"}}})
    result = load_preferences(img_dir)
    assert list(result.formats.items()) == [(str(img_dir / "a_trl.json"), "trl"),
                                            (str(img_dir / "b_swift.jsonl"), "swift"),
                                            (str(img_dir / "sub/c.jsonl"), "alpaca")]
    assert [r.id for r in result.records] == ["a_trl-1", "b_swift-1", "c-1"]
    assert result.records[2].prompt == [user(text("Hi?"))]


def test_empty_directory(tmp_path):
    with pytest.raises(DataError, match="no .jsonl, .json or .parquet"):
        load_preferences(tmp_path)


def test_parquet_with_image_structs_streams_batches(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = png_bytes()
    rows = [{"image": {"bytes": data, "path": f"{i}.png"}, "question": f"Q{i}?", "chosen": "yes", "rejected": "no",
             "idx": i} for i in range(7)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "r.parquet", row_group_size=3)
    result = load_preferences(tmp_path / "r.parquet")
    assert result.formats == {str(tmp_path / "r.parquet"): "rlaifv"}
    assert [r.source.row for r in result.records] == list(range(1, 8))
    assert result.records[6].prompt == [user(IMG, text("Q6?"))] and result.records[6].meta == {"idx": 6}
    assert result.records[0].images[0].data == data


def test_save_to_disk_folder_does_not_decode_images(tmp_path, monkeypatch):
    import datasets

    rows = [{"images": [Image.new("RGB", (6, 4), (9, 9, 9))], "prompt": [{"role": "user", "content": "Q?"}],
             "chosen": [{"role": "assistant", "content": "A"}], "rejected": [{"role": "assistant", "content": "B"}]}
            for _ in range(3)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))

    def no_decode(*a, **k):
        raise AssertionError("an Image column was decoded")

    monkeypatch.setattr(datasets.features.Image, "decode_example", no_decode)
    result = load_preferences(tmp_path / "saved")
    assert result.n_kept == 3 and result.formats == {str(tmp_path / "saved"): "trl"}
    rec = result.records[0]
    assert rec.prompt == [user(IMG, text("Q?"))] and rec.images[0].data[:4] == b"\x89PNG"


def test_save_to_disk_dataset_dict_split(tmp_path):
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list([trl_row()]),
                               "test": datasets.Dataset.from_list([trl_row(), trl_row()])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert load_preferences(tmp_path / "dd", split="test").n_kept == 2
    with pytest.raises(DataError, match="no split 'dev'"):
        load_preferences(tmp_path / "dd", split="dev")


def test_in_memory_rows_with_pil_images():
    img = Image.new("RGB", (4, 4), (1, 2, 3))
    rows = [trl_row(images=[img], id="a"), trl_row(id="b")]
    result = load_preferences(rows)
    assert [r.id for r in result.records] == ["a", "b"] and result.records[0].images[0].pil is img
    assert result.records[0].prompt[0]["content"][0] == IMG and result.formats == {"<rows>": "trl"}


def test_in_memory_dataset_with_pil_images():
    import datasets

    ds = datasets.Dataset.from_list([trl_row(images=[Image.new("L", (3, 3), 5)])])
    result = load_preferences(ds)
    assert result.n_kept == 1 and result.records[0].images[0].data[:4] == b"\x89PNG"
    assert result.records[0].source.file == "<dataset>"


def test_image_root_overrides_file_folder(tmp_path):
    make_image(tmp_path / "pics" / "x.png")
    path = write_jsonl(tmp_path / "data" / "p.jsonl", [trl_row(images=["x.png"])])
    with pytest.raises(DataError):
        load_preferences(path)
    rec = load_preferences(path, image_root=tmp_path / "pics").records[0]
    assert rec.images[0].path == str(tmp_path / "pics" / "x.png")


def test_skip_mode_writes_rejected_rows(tmp_path):
    img = Image.new("RGB", (2, 2))
    rows = [trl_row(), trl_row(rejected=[{"role": "assistant", "content": "Blue."}]),
            trl_row(chosen=[{"role": "assistant", "content": ""}], rejected=[{"role": "assistant", "content": " "}],
                    images=[img], prompt="<image>q"), trl_row()]
    path = write_jsonl(tmp_path / "p.jsonl", rows[:2] + rows[3:], raw_lines={2: "{nope"})
    out = tmp_path / "run" / "rejected_rows.jsonl"
    result = load_preferences(path, on_invalid="skip", rejected_rows_path=out)
    assert isinstance(result, LoadResult)
    assert result.summary() == "read 4, kept 2, skipped 2"
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["row"], x["kind"], x["field"]) for x in lines] == [(2, "identical_responses", "rejected"),
                                                                  (3, "invalid_json", "<line>")]
    assert lines[0]["raw"] == rows[1] and lines[1]["raw"] == "{nope"
    assert all(set(x) >= {"file", "row", "kind", "field", "message", "fix", "raw"} for x in lines)
    # in-memory rows with PIL images and two errors: still one JSON line, the others attached
    mem = load_preferences([rows[2]], on_invalid="skip", rejected_rows_path=out)
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert mem.n_skipped == 1 and line["kind"] == "empty_response"
    assert line["raw"]["images"] == ["<PIL image 2x2 RGB>"] and line["other_errors"]


def test_iter_preferences_streams_and_counts(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [trl_row(), {"x": 1}, trl_row()])
    stream = iter_preferences(path)
    first = next(stream)
    assert isinstance(first, PreferenceRecord) and stream.n_read == 1
    rest = list(stream)
    assert [type(x) for x in rest] == [RowError, PreferenceRecord]
    assert (stream.n_read, stream.n_kept, stream.n_skipped) == (3, 2, 1)


def test_hundred_thousand_style_rows_are_cheap(tmp_path, monkeypatch):
    # the `data check` budget is 100k rows in < 60 s: rows sharing images must open each file once
    # (counted, not timed: a timing assert fails on a loaded machine and proves nothing on a fast one)
    import vlmdpo.data.images as images_mod

    for i in range(50):
        make_image(tmp_path / "img" / f"{i}.png", size=(4, 4))
    rows = [trl_row(images=[f"img/{i % 50}.png"], prompt=[{"role": "user", "content": f"Question {i}?"}])
            for i in range(5000)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    opened: list[str] = []
    real_open = images_mod.Image.open
    monkeypatch.setattr(images_mod.Image, "open", lambda fp, *a, **k: (opened.append(str(fp)), real_open(fp, *a, **k))[1])
    result = load_preferences(path)
    assert result.n_kept == 5000
    assert 0 < len(opened) <= 50
