"""`vlmdpo pairs`: best-worst / all / min-margin with counted drops, output that `vlmdpo data check` passes
with its images, and bad scored rows named by file:row and field."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmdpo.cli import main
from vlmdpo.data.stats import check_data
from vlmdpo.engine.pairs import make_pairs

IMAGES = Path(__file__).resolve().parents[2] / "src" / "vlmdpo" / "samples" / "trl" / "images"
PROMPT = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape?"}]}]


def scored_row(i: int, candidates: list[str], scores: list) -> dict:
    return {"id": f"p{i}", "prompt": PROMPT, "images": [str(IMAGES / "red_square.png")], "candidates": candidates,
            "scores": scores, "meta": {}, "source": f"c.jsonl:{i}"}


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def scored(tmp_path: Path) -> Path:
    return write(tmp_path / "scored.jsonl", [
        scored_row(1, ["a", "b", "c", "d"], [1.0, 0.0, 0.5, None]),  # 1 unscored
        scored_row(2, ["a", "b"], [1.0, 1.0]),                         # a tie
        scored_row(3, ["a", "b", "c"], [0.9, 0.8, 0.0]),               # 0.9-0.8 is a small margin
        scored_row(4, ["a"], [1.0]),                                   # one answer: no pair
        scored_row(5, ["a", "a", "a"], [1.0, 1.0, 1.0]),               # one text sampled three times: no pair
        scored_row(6, ["a", "b"], [None, None]),                       # nothing scored
    ])


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_best_worst(scored: Path, tmp_path: Path):
    out = tmp_path / "pairs.jsonl"
    counts = make_pairs(scored, out, strategy="best-worst")
    assert (counts.prompts, counts.pairs, counts.ties, counts.low_margin, counts.one_answer, counts.unscored) == \
        (6, 2, 1, 0, 2, 3)
    rows = read(out)
    assert [(r["id"], r["chosen"][0]["content"][0]["text"], r["rejected"][0]["content"][0]["text"]) for r in rows] \
        == [("p1", "a", "b"), ("p3", "a", "c")]
    assert all(r["images"] == [str(IMAGES / "red_square.png")] and r["prompt"] == PROMPT for r in rows)


def test_all_with_a_margin(scored: Path, tmp_path: Path):
    out = tmp_path / "pairs.jsonl"
    counts = make_pairs(scored, out, strategy="all", min_margin=0.2)
    # p1: a>b 1.0, a>c 0.5, c>b 0.5 -> 3; p2: tie; p3: a>b 0.1 low, a>c, b>c -> 2
    assert (counts.prompts, counts.pairs, counts.ties, counts.low_margin, counts.one_answer, counts.unscored) == \
        (6, 5, 1, 1, 2, 3)
    rows = read(out)
    assert [r["id"] for r in rows] == ["p1-0", "p1-1", "p1-2", "p3-0", "p3-1"]
    texts = {(r["chosen"][0]["content"][0]["text"], r["rejected"][0]["content"][0]["text"]) for r in rows[:3]}
    assert texts == {("a", "b"), ("a", "c"), ("c", "b")}
    counts = make_pairs(scored, out, strategy="all", min_margin=0.6)
    assert (counts.pairs, counts.low_margin) == (3, 3)  # p1 a>b; p3 a>c, b>c


def test_output_passes_data_check_and_keeps_images(scored: Path, tmp_path: Path, capsys):
    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", str(scored), "-o", str(out), "--strategy", "all"]) == 0
    summary = capsys.readouterr().out
    assert ("6 prompt(s), 6 pair(s) written; dropped: 1 tie(s), 0 below the margin, 2 prompt(s) with one distinct "
            "answer; 3 unscored") in summary
    report = check_data(str(out))
    assert not report.errors
    assert main(["data", "check", str(out)]) == 0
    assert all(r["images"] for r in read(out))


@pytest.mark.parametrize("row, field, words", [
    ({"id": "x", "prompt": PROMPT, "scores": [1.0]}, "candidates", "missing"),
    ({"id": "x", "prompt": PROMPT, "candidates": ["a", "b"]}, "scores", "missing"),
    ({"id": "x", "prompt": PROMPT, "candidates": ["a", "b"], "scores": [1.0]}, "scores", "1 score(s) for 2"),
    ({"id": "x", "prompt": PROMPT, "candidates": ["a", "b"], "scores": [1.0, "high"]}, "scores[1]", "not a number"),
    ({"id": "x", "prompt": PROMPT, "candidates": ["a", "b"], "scores": [1.0, True]}, "scores[1]", "not a number"),
    ({"id": "x", "candidates": ["a", "b"], "scores": [1.0, 0.0]}, "prompt", "missing"),
])
def test_bad_rows_name_file_row_and_field(tmp_path: Path, capsys, row: dict, field: str, words: str):
    scored = write(tmp_path / "scored.jsonl", [scored_row(1, ["a", "b"], [1.0, 0.0]), row])
    out = tmp_path / "pairs.jsonl"
    with pytest.raises(ValueError) as info:
        make_pairs(scored, out)
    assert f"scored.jsonl:2: field '{field}'" in str(info.value) and words in str(info.value)
    assert not out.exists()  # nothing half-written
    assert main(["pairs", str(scored), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"scored.jsonl:2: field '{field}'" in err and "Traceback" not in err


def test_not_json_and_bad_options(tmp_path: Path):
    bad = tmp_path / "scored.jsonl"
    bad.write_text('{"id": 1\n')
    with pytest.raises(ValueError, match=r"scored.jsonl:1: not valid JSON"):
        make_pairs(bad, tmp_path / "o.jsonl")
    with pytest.raises(ValueError, match=r"--min-margin -1"):
        make_pairs(bad, tmp_path / "o.jsonl", min_margin=-1)


def test_the_same_text_is_one_answer_with_its_scores_averaged(tmp_path: Path):
    # a judge model (or a person) can score two samples of the same text apart; training refuses a pair of them
    src = write(tmp_path / "s.jsonl", [scored_row(1, ["red", "red", "blue"], [1.0, 0.0, 0.5]),
                                       scored_row(2, ["red", "red", "blue", "blue"], [1.0, 1.0, 0.0, 0.5])])
    for strategy in ("best-worst", "all"):
        counts = make_pairs(src, tmp_path / f"{strategy}.jsonl", strategy=strategy)
        assert (counts.pairs, counts.ties) == (1, 1)
        (pair,) = read(tmp_path / f"{strategy}.jsonl")
        assert (pair["id"], pair["chosen"][0]["content"][0]["text"], pair["rejected"][0]["content"][0]["text"]) == \
            ("p2", "red", "blue")
