"""Video pairs end to end on tiny models: a real mp4 (made here with PyAV) and a fake one.

Qwen2-VL takes video: the pair is checked, encoded, trained on and used by chat / compare.
Idefics3 does not: the pair is refused at its row, naming the field and the fix.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from video_helpers import swift_video_rows, write_fake_video
from vlmdpo.cli import main
from vlmdpo.data.load import load_preferences
from vlmdpo.encode import EncodeError, encode_pair
from vlmdpo.model.tiny import build_tiny_processor, tiny_video

FIX = "use a Qwen2-VL/2.5-VL/3-VL model or drop the videos"


@pytest.fixture
def video_data(tmp_path: Path) -> Path:
    tiny_video(tmp_path / "clip.mp4", frames=4)
    tiny_video(tmp_path / "other.mp4", frames=3, seed=1)
    return swift_video_rows(tmp_path / "prefs.jsonl", ["clip.mp4", "other.mp4"], n=4)


def test_data_check_accepts_a_real_video_and_names_the_row_of_a_fake_one(tmp_path, video_data, capsys):
    assert main(["data", "check", str(video_data)]) == 0
    assert main(["data", "check", "--decode-images", str(video_data)]) == 0
    write_fake_video(tmp_path / "fake.mp4")
    bad = swift_video_rows(tmp_path / "bad.jsonl", ["clip.mp4", "fake.mp4"], n=2)
    capsys.readouterr()
    assert main(["data", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "bad.jsonl:2: field 'videos[0]'" in out and "fake.mp4" in out and "not a readable video" in out
    assert "replace it with a real video file" in out and "bad.jsonl:1" not in out


def test_training_reads_a_fake_video_as_a_bad_row(tmp_path, video_data):
    from vlmdpo.data.validate import DataError

    write_fake_video(tmp_path / "fake.mp4")
    bad = swift_video_rows(tmp_path / "bad.jsonl", ["clip.mp4", "fake.mp4"], n=2)
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'videos\[0\]'"):
        load_preferences(str(bad), on_invalid="error")
    kept = load_preferences(str(bad), on_invalid="skip")
    assert [r.source.row for r in kept.records] == [1]


def test_two_training_steps_on_qwen2_vl_with_video_pairs(tmp_path, video_data, monkeypatch):
    import transformers.models.qwen2_vl.modeling_qwen2_vl as qwen

    from vlmdpo.config import load_config
    from vlmdpo.train.loop import run_training

    seen = []
    real = qwen.Qwen2VLModel.get_video_features

    def spy(self, pixel_values_videos, video_grid_thw=None, **kw):
        seen.append(video_grid_thw.clone())
        return real(self, pixel_values_videos, video_grid_thw, **kw)

    monkeypatch.setattr(qwen.Qwen2VLModel, "get_video_features", spy)
    cfg = load_config(None, dict(model_name_or_path="tiny:qwen2_vl", dataset=str(video_data),
                                 output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                                 learning_rate=1e-3, logging_steps=1, save_steps=None, progress_bar=False,
                                 max_length=512, seed=3, lora_rank=4, lora_alpha=8, video_max_frames=4))
    res = run_training(cfg, echo=lambda _m: None)
    assert res.global_step == 2 and res.n_train_pairs == 4 and not res.dropped
    assert math.isfinite(res.train_metrics["loss"])
    assert seen and all(int(g[:, 0].min()) >= 1 for g in seen)  # the frames reached the vision tower


def test_video_pairs_are_refused_at_their_row_on_a_family_without_video(video_data):
    rec = load_preferences(str(video_data)).records[1]
    with pytest.raises(EncodeError) as info:
        encode_pair(rec, build_tiny_processor("idefics3"), "idefics3", max_length=None)
    text = str(info.value)
    assert info.value.kind == "video" and "prefs.jsonl:2" in text and "field 'videos'" in text and FIX in text
    pair = encode_pair(rec, build_tiny_processor("qwen2_vl"), "qwen2_vl", max_length=None)
    assert "pixel_values_videos" in pair.vision and "video_grid_thw" in pair.vision


def test_training_on_idefics3_names_the_video_row_and_the_fix(tmp_path, video_data):
    from vlmdpo.config import load_config
    from vlmdpo.train.loop import run_training

    cfg = load_config(None, dict(model_name_or_path="tiny:idefics3", dataset=str(video_data),
                                 output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=2,
                                 save_steps=None, progress_bar=False, max_length=512, lora_rank=4, lora_alpha=8))
    said: list[str] = []
    with pytest.raises(Exception) as info:  # noqa: PT011 -- the kind of stop belongs to the bad-data report
        run_training(cfg, echo=said.append)
    text = "\n".join(said) + str(info.value)
    assert "prefs.jsonl:1" in text and "field 'videos'" in text and FIX in text


def test_convert_keeps_videos_for_llamafactory_and_swift(tmp_path, video_data, capsys):
    from vlmdpo.data.convert import canonical

    before = [canonical(r) for r in load_preferences(str(video_data)).records]
    for to in ("llamafactory", "swift"):
        out = tmp_path / to / "prefs.jsonl"
        assert main(["data", "convert", str(video_data), "-o", str(out), "--to", to]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert all(len(r["videos"]) == 1 and (out.parent / r["videos"][0]).is_file() for r in rows)
        after = [canonical(r) for r in load_preferences(str(out)).records]
        assert [{**a, "meta": {}} for a in after] == [{**b, "meta": {}} for b in before]
    capsys.readouterr()
    assert main(["data", "convert", str(video_data), "-o", str(tmp_path / "t.jsonl"), "--to", "trl"]) == 2
    assert "--to llamafactory" in capsys.readouterr().err


def test_data_show_html_plays_the_video(tmp_path, video_data):
    page = tmp_path / "row.html"
    assert main(["data", "show", str(video_data), "--row", "1", "--html", str(page)]) == 0
    html = page.read_text()
    assert "<video controls" in html and 'src="data:video/mp4;base64,' in html and "clip.mp4" in html


def test_chat_and_compare_take_video_on_qwen2_vl(tmp_path, video_data):
    from vlmdpo.chat import ChatError, run_chat
    from vlmdpo.compare import run_compare
    from vlmdpo.inference import GenerationSettings

    settings = GenerationSettings(max_new_tokens=3)
    clip = str(tmp_path / "clip.mp4")
    reply = run_chat("tiny:qwen2_vl", videos=[clip], prompt="what happens?", device="cpu", settings=settings,
                     stdout=io.StringIO())
    assert isinstance(reply, str)
    with pytest.raises(ChatError, match="idefics3.*cannot take video"):
        run_chat("tiny:idefics3", videos=[clip], prompt="what happens?", device="cpu", settings=settings,
                 stdout=io.StringIO())
    with pytest.raises(ChatError, match="not a readable video"):
        run_chat("tiny:qwen2_vl", videos=[str(write_fake_video(tmp_path / "fake.mp4"))], prompt="?", device="cpu",
                 settings=settings, stdout=io.StringIO(), model_loader=None)
    one = run_compare("tiny:qwen2_vl", "tiny:qwen2_vl", video=[clip], prompt="what happens?", out=tmp_path / "a.html",
                      settings=settings, device="cpu", stdout=io.StringIO())
    assert one.rows[0].reward("tuned_answer", one.beta) == 0.0
    rows = run_compare("tiny:qwen2_vl", "tiny:qwen2_vl", data=str(video_data), limit=1, out=tmp_path / "b.html",
                       settings=settings, device="cpu", stdout=io.StringIO())
    assert set(rows.rows[0].tuned_logps) == {"base_answer", "tuned_answer", "chosen", "rejected"}


def test_cli_chat_video_flag(tmp_path, capsys):
    clip = tiny_video(tmp_path / "clip.mp4")
    assert main(["chat", "--model", "tiny:qwen2_vl", "--video", str(clip), "--prompt", "hi", "--max-new-tokens", "2",
                 "--device", "cpu"]) == 0
    assert main(["compare", "--base", "tiny:qwen2_vl", "--tuned", "tiny:qwen2_vl", "--data", "x.jsonl", "--video",
                 str(clip)]) == 2
    assert "--video go with --prompt" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_every_qwen_family_encodes_a_video_pair(video_data, family):
    rec = load_preferences(str(video_data)).records[0]
    pair = encode_pair(rec, build_tiny_processor(family), family, max_length=None, video_max_frames=2)
    grid = pair.vision["video_grid_thw"]
    assert grid.shape == (1, 3) and int(grid[0, 0]) == 1  # 2 frames -> 1 temporal patch of 2
    assert pair.vision["pixel_values_videos"].shape[0] == int(grid.prod())


def test_data_check_with_a_model_refuses_video_rows_on_a_family_without_video(video_data, capsys):
    assert main(["data", "check", str(video_data), "--model", "tiny:qwen2_vl"]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(video_data), "--model", "tiny:idefics3"]) == 1
    out = capsys.readouterr().out
    assert "prefs.jsonl:1: field 'videos'" in out and "prefs.jsonl:4: field 'videos'" in out and FIX in out
    assert "read 4, kept 0, skipped 4" in out


def test_training_on_idefics3_honours_on_invalid_for_video_rows(tmp_path, video_data):
    from vlmdpo.config import load_config
    from vlmdpo.data.validate import DataError
    from vlmdpo.train.loop import run_training

    with video_data.open("a", encoding="utf-8") as f:  # one pair without video: what skip leaves to train on
        f.write(json.dumps({"messages": [{"role": "user", "content": "Name a colour."},
                                         {"role": "assistant", "content": "Red."}], "rejected_response": "Nine."}) + "\n")
    common = dict(model_name_or_path="tiny:idefics3", dataset=str(video_data), max_steps=1,
                  per_device_train_batch_size=1, save_steps=None, progress_bar=False, max_length=512, lora_rank=4,
                  lora_alpha=8)
    said: list[str] = []
    with pytest.raises(DataError) as info:
        run_training(load_config(None, dict(common, output_dir=str(tmp_path / "err"))), echo=said.append)
    assert "prefs.jsonl:1" in str(info.value) and "do not fit" not in "\n".join(said) + str(info.value)
    res = run_training(load_config(None, dict(common, output_dir=str(tmp_path / "skip"), on_invalid="skip")),
                       echo=said.append)
    assert res.n_train_pairs == 1
    rejected = [json.loads(line) for line in (tmp_path / "skip" / "rejected_rows.jsonl").read_text().splitlines()]
    assert len(rejected) == 4 and all("videos" in json.dumps(r) for r in rejected)
