from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import vlmdpo
from vlmdpo.cli import main
from vlmdpo.data.convert import canonical
from vlmdpo.data.load import load_preferences

SAMPLES = Path(vlmdpo.__file__).parent / "samples"
GOOD = SAMPLES / "trl" / "prefs.jsonl"
BROKEN = SAMPLES / "broken" / "prefs.jsonl"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def T(text):
    return {"type": "text", "text": text}


def row(prompt, chosen, rejected, images=(), system=None):
    msgs = [{"role": "system", "content": [T(system)]}] if system else []
    msgs.append({"role": "user", "content": prompt})
    out = {"prompt": msgs, "chosen": [{"role": "assistant", "content": [T(chosen)]}],
           "rejected": [{"role": "assistant", "content": [T(rejected)]}]}
    if images:
        out["images"] = list(images)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ check
def test_check_sample_is_clean(capsys):
    rc, out, _ = run(capsys, "data", "check", GOOD)
    assert rc == 0
    assert "format detected as trl" in out
    assert out.strip().endswith("read 8, kept 8, skipped 0")


def test_check_broken_sample_groups_problems(capsys):
    rc, out, _ = run(capsys, "data", "check", BROKEN)
    assert rc == 1
    assert "read 10, kept 1, skipped 9" in out
    for kind, count in [("missing_field", 2), ("image", 2), ("invalid_json", 1), ("empty_response", 1),
                        ("identical_responses", 1), ("placeholder_count", 1), ("wrong_role", 1)]:
        assert f"  {kind}: {count}\n" in out
    assert f"{BROKEN}:6: field 'images': the prompt has 1 image placeholder(s) but 2 image(s)" in out
    assert "images/missing.png" in out and "corrupt.png" in out and " -> " in out
    rc, out, _ = run(capsys, "data", "check", BROKEN, "--max-examples", "1")
    assert "... and 1 more" in out and out.count(":3: field 'rejected'") + out.count(":10: field") == 1


def test_check_missing_path_is_usage_error(capsys, tmp_path, monkeypatch):
    rc, out, err = run(capsys, "data", "check", tmp_path / "nope.jsonl")
    assert rc == 2 and "no such file or directory" in err and "nope.jsonl" in err and "Traceback" not in err
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    # "data/prefs" has the shape of a hub name, but ./data exists: a typo'd local path, not a hub lookup
    rc, _, err = run(capsys, "data", "check", "data/prefs")
    assert rc == 2 and "no such file or directory: data/prefs" in err


def test_unreadable_source_is_usage_error(capsys, tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    rc, _, err = run(capsys, "data", "check", tmp_path / "bad.json")
    assert rc == 2 and "bad.json" in err and "Traceback" not in err


def test_check_several_paths_and_explicit_format(capsys, tmp_path):
    swift = write_jsonl(tmp_path / "s.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                             {"role": "assistant", "content": "hello"}],
                                                "rejected_response": "go away"}])
    rc, out, _ = run(capsys, "data", "check", GOOD, swift)
    assert rc == 0 and "format detected as swift" in out and "read 9, kept 9, skipped 0" in out
    rc, out, _ = run(capsys, "data", "check", GOOD, "--format", "swift")
    assert rc == 1 and "missing_field: 8" in out


def test_decode_images_catches_truncation_header_check_does_not(capsys, tmp_path):
    import io

    import numpy as np
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[:300])
    data = write_jsonl(tmp_path / "d.jsonl", [row([{"type": "image"}, T("q")], "a", "b", ["cut.png"])])
    assert run(capsys, "data", "check", data)[0] == 0
    rc, out, _ = run(capsys, "data", "check", data, "--decode-images")
    assert rc == 1 and "truncated" in out and "d.jsonl:1: field 'images[0]'" in out


def test_image_root(capsys, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [row([{"type": "image"}, T("q")], "a", "b", ["red_square.png"])])
    assert run(capsys, "data", "check", data)[0] == 1
    assert run(capsys, "data", "check", data, "--image-root", SAMPLES / "trl" / "images")[0] == 0


# ------------------------------------------------------------------------------------------ stats
@pytest.fixture()
def stats_data(tmp_path) -> Path:
    Image.new("RGB", (8, 6)).save(tmp_path / "a.png")
    Image.new("RGB", (10, 20)).save(tmp_path / "b.png")
    img = {"type": "image"}
    return write_jsonl(tmp_path / "s.jsonl", [
        row([img, T("ab c")], "x y", "yyyy", ["a.png"]),
        row([T("ab cd ef")], "zz zz z", "w"),
        row([img, T("ab c")], "q", "r r", ["a.png"]),  # same prompt as row 1
        row([img, img, T("hi")], "a b c d", "ab", ["a.png", "b.png"], system="sys "),
    ])


def test_stats_json_hand_computed(capsys, stats_data):
    rc, out, _ = run(capsys, "data", "stats", stats_data, "--json")
    assert rc == 0
    s = json.loads(out)
    assert s["rows"] == 4 and s["read"] == 4 and s["skipped"] == 0
    assert s["images_per_row"] == {"0": 1, "1": 2, "2": 1}
    assert s["unique_images"] == 2
    assert s["image_width"] == {"min": 8, "median": 8, "mean": 8.5, "max": 10}      # [8, 8, 8, 10]
    assert s["image_height"] == {"min": 6, "median": 6, "mean": 9.5, "max": 20}     # [6, 6, 6, 20]
    assert s["image_pixels"] == {"min": 48, "median": 48, "mean": 86.0, "max": 200}
    # prompt text includes the system turn: "sys " + "hi" = 6 chars
    assert s["chars"]["prompt"] == {"min": 4, "median": 5.0, "mean": 5.5, "max": 8}     # [4, 8, 4, 6]
    assert s["chars"]["chosen"] == {"min": 1, "median": 5.0, "mean": 4.5, "max": 7}     # [3, 7, 1, 7]
    assert s["chars"]["rejected"] == {"min": 1, "median": 2.5, "mean": 2.5, "max": 4}   # [4, 1, 3, 2]
    # ratios [0.75, 7, 0.3333, 3.5]: median (0.75 + 3.5) / 2, mean 11.5833 / 4
    assert s["chosen_rejected_char_ratio"]["median"] == pytest.approx(2.125)
    assert s["chosen_rejected_char_ratio"]["mean"] == pytest.approx(2.896)
    assert s["chosen_longer_fraction"] == 0.5
    assert s["distinct_prompts"] == 3 and s["duplicate_prompts"] == 1
    assert s["rows_with_system_prompt"] == 1 and s["multi_turn_rows"] == 0
    assert s["tokens"] is None


def _word_tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "ab": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    return folder


def test_stats_token_counts_with_a_local_tokenizer(capsys, stats_data, tmp_path):
    model = _word_tokenizer(tmp_path / "tok")
    rc, out, _ = run(capsys, "data", "stats", stats_data, "--model", model, "--json")
    assert rc == 0
    tokens = json.loads(out)["tokens"]
    assert tokens["prompt"] == {"min": 2, "median": 2.0, "mean": 2.25, "max": 3}     # [2, 3, 2, 2]
    assert tokens["chosen"] == {"min": 1, "median": 2.5, "mean": 2.5, "max": 4}      # [2, 3, 1, 4]
    assert tokens["rejected"] == {"min": 1, "median": 1.0, "mean": 1.25, "max": 2}   # [1, 1, 2, 1]
    rc, out, _ = run(capsys, "data", "stats", stats_data, "--model", model)
    assert "text length (tokens" in out and "prompt     min 2  median 2  mean 2.25  max 3" in out


def test_stats_text_and_bad_model(capsys, tmp_path):
    rc, out, _ = run(capsys, "data", "stats", BROKEN)
    assert rc == 0 and "rows: 1 (read 10, skipped 9 invalid" in out and "images per row: 1: 1" in out
    rc, _, err = run(capsys, "data", "stats", GOOD, "--model", tmp_path / "no-model-here")
    assert rc == 2 and "could not load a tokenizer" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------- show
def test_show_text_marks_images_with_index_and_size(capsys):
    rc, out, _ = run(capsys, "data", "show", GOOD, "--row", "4")
    assert rc == 0
    assert "[user] Image A: <image 0: 64x48> Image B: <image 1: 64x48> Which image shows a circle?" in out
    assert "--- chosen ---\n[assistant] Image B shows a circle." in out
    assert "--- rejected ---\n[assistant] Image A shows a circle." in out
    rc, out, _ = run(capsys, "data", "show", GOOD, "--row", f"{GOOD}:2")
    assert rc == 0 and "[system] You are a careful assistant." in out


def test_show_html_is_self_contained_and_escaped(capsys, tmp_path):
    Image.new("RGB", (5, 4), (9, 9, 9)).save(tmp_path / "a.png")
    data = write_jsonl(tmp_path / "d.jsonl", [row([{"type": "image"}, T("is 1 < 2 & <b>?")], "yes <i>", "no",
                                                  ["a.png"])])
    page = tmp_path / "page.html"
    rc, out, _ = run(capsys, "data", "show", data, "--row", "1", "--html", page)
    assert rc == 0 and f"wrote {page}" in out
    html = page.read_text()
    assert html.count('src="data:image/png;base64,') == 1 and "(5x4)" in html
    assert "is 1 &lt; 2 &amp; &lt;b&gt;?" in html and "yes &lt;i&gt;" in html and "<b>" not in html
    assert 'class="chosen"' in html and 'class="rejected"' in html and "grid-template-columns" in html
    assert "<figcaption>image 0: a.png (5x4)</figcaption>" in html  # captions name the image as the row does


def test_show_bad_rows(capsys):
    rc, _, err = run(capsys, "data", "show", GOOD, "--row", "9")
    assert rc == 2 and "row 9 is out of range" in err and "has 8 rows" in err
    rc, _, err = run(capsys, "data", "show", BROKEN, "--row", "6")
    assert rc == 2 and "row 6 is invalid" in err and "placeholder" in err
    rc, _, err = run(capsys, "data", "show", GOOD, "--row", "zero")
    assert rc == 2 and "not a row number" in err


# ---------------------------------------------------------------------------------------- convert
@pytest.mark.parametrize("to", ["trl", "swift", "llamafactory"])
def test_convert_sample_round_trips(capsys, tmp_path, to):
    out = tmp_path / to / "prefs.jsonl"
    rc, stdout, _ = run(capsys, "data", "convert", GOOD, "-o", out, "--to", to)
    assert rc == 0 and f"wrote {out}" in stdout
    assert len(list((out.parent / "images").iterdir())) == 3
    original = load_preferences(GOOD).records
    back = load_preferences(out).records
    assert [canonical(r) for r in back] == [canonical(r) for r in original]


def test_convert_invalid_data_lists_errors(capsys, tmp_path):
    rc, _, err = run(capsys, "data", "convert", BROKEN, "-o", tmp_path / "o.jsonl", "--to", "trl")
    assert rc == 1 and "9 of 10 rows are invalid; nothing was written" in err
    assert "placeholder_count" in err and "wrong_role" in err  # every problem listed, not just the first
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no partial file, no stray images


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "vlmdpo", "data", "check", str(BROKEN)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "read 10, kept 1, skipped 9" in proc.stdout
