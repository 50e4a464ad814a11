"""`vlmdpo judge --by labels`: the studio's labels file read as scores; rows not labelled wait for a later
run; bad labels name the labels file, its line and the field, and keep the rows already judged."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmdpo.cli import main
from vlmdpo.engine.judge import judge_file
from vlmdpo.engine.judge_io import JudgeError
from vlmdpo.engine.judge_labels import LabelsScorer


def _row(i: int, n: int = 3) -> dict:
    return {"id": f"r{i}", "prompt": [{"role": "user", "content": [{"type": "text", "text": f"q{i}?"}]}],
            "images": [], "candidates": [f"answer {i}.{k}" for k in range(n)], "meta": {}, "source": f"p:{i}"}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _label(row_id: str, best, worst=None, skip=False, **more) -> dict:
    return {"id": row_id, "best": best, "worst": worst, "skip": skip, "labeler": "ana",
            "time": "2026-11-29T19:00:00Z", **more}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_labels_become_scores_and_unlabelled_rows_wait(tmp_path, capsys):
    cands = _write(tmp_path / "c.jsonl", [_row(i) for i in range(4)])
    labels = _write(tmp_path / "labels.jsonl", [
        _label("r0", 2), _label("r1", 0, worst=1), _label("r0", 1, worst=0),  # r0 relabelled: the last line wins
        _label("r2", None, skip=True)])
    out = tmp_path / "scored.jsonl"
    assert main(["judge", str(cands), "--by", "labels", "--labels", str(labels), "-o", str(out)]) == 0
    assert "judged 3 rows; 1 rows not labelled yet" in capsys.readouterr().out
    rows = {r["id"]: r for r in _read(out)}
    assert rows["r0"]["scores"] == [0.0, 1.0, 0.5] and rows["r1"]["scores"] == [1.0, 0.0, 0.5]
    assert rows["r2"]["scores"] == [None, None, None] and "r3" not in rows
    assert rows["r0"]["judge"] == {"by": "labels", "labels": f"{labels}:3", "labeler": "ana",
                                   "time": "2026-11-29T19:00:00Z", "skip": False}
    # labelling more and judging again picks the new row up, and rewrites nothing already there
    with labels.open("a") as fh:
        fh.write(json.dumps(_label("r3", 1)) + "\n")
    before = out.read_text()
    assert main(["judge", str(cands), "--by", "labels", "--labels", str(labels), "-o", str(out)]) == 0
    assert "judged 1 rows, 3 already there" in capsys.readouterr().out
    assert out.read_text().startswith(before) and _read(out)[-1]["scores"] == [0.0, 1.0, 0.0]
    # the pairs step counts the skipped row's answers as unscored
    assert main(["pairs", str(out), "-o", str(tmp_path / "pairs.jsonl")]) == 0
    said = capsys.readouterr().out
    assert "4 prompt(s), 3 pair(s) written" in said and "3 unscored answer(s)" in said


@pytest.mark.parametrize("line, message", [
    (_label("r9", 0), r"labels.jsonl:2: field 'id': 'r9' is not a row of the candidates file"),
    (_label("r1", 3), r"labels.jsonl:2: field 'best' is 3, but that row has 3 candidate\(s\) \(0..2\)"),
    (_label("r1", "0"), r"labels.jsonl:2: field 'best' must be an index \(got '0'\)"),
    (_label("r1", 0, worst=True), r"labels.jsonl:2: field 'worst' must be an index or null \(got True\)"),
    (_label("r1", 1, worst=1), r"labels.jsonl:2: field 'worst' is the same answer as 'best'"),
    (_label("r1", 0, skip="no"), r"labels.jsonl:2: field 'skip' must be true or false"),
    ({"id": 1, "best": 0}, r"labels.jsonl:2: field 'id' must be the candidates row's id"),
    (_label("r1", None), r"labels.jsonl:2: field 'best' must be an index \(got None\)"),
])
def test_bad_labels_name_file_line_and_field(tmp_path, line, message):
    cands = _write(tmp_path / "c.jsonl", [_row(0), _row(1)])
    labels = _write(tmp_path / "labels.jsonl", [_label("r0", 0), line])
    with pytest.raises(JudgeError, match=message):
        LabelsScorer(labels, cands)


def test_bad_labels_keep_the_rows_already_judged(tmp_path, capsys):
    cands = _write(tmp_path / "c.jsonl", [_row(0), _row(1)])
    labels = _write(tmp_path / "labels.jsonl", [_label("r0", 0)])
    out = tmp_path / "scored.jsonl"
    judge_file(cands, out, LabelsScorer(labels, cands))
    _write(labels, [_label("r0", 0), _label("r1", 7)])
    assert main(["judge", str(cands), "--by", "labels", "--labels", str(labels), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "labels.jsonl:2: field 'best' is 7" in err and "Traceback" not in err
    assert [r["id"] for r in _read(out)] == ["r0"]
    assert main(["judge", str(cands), "--by", "labels", "-o", str(out)]) == 2
    assert "--by labels needs the labels file" in capsys.readouterr().err
    labels.write_text('{"id": "r0", "best": 0}\n{"id": "r1", "be')  # a torn line: not JSON
    with pytest.raises(JudgeError, match=r"labels.jsonl:2: not valid JSON"):
        LabelsScorer(labels, cands)
