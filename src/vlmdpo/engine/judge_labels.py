"""`--by labels`: people's choices from the studio's label page, read as scores.

The labels file (the contract with the studio's label page) is JSON lines, one decision per line:

    {"id": "<the candidates row's id>", "best": <index into that row's candidates>,
     "worst": <index, or null>, "skip": <true/false>, "labeler": "<name>", "time": "<ISO 8601>"}

`best` may be null only when `skip` is true; `skip`, `worst`, `labeler` and `time` may be left out
(false, null, "", ""). When an id appears more than once, the last line wins (a changed mind).
Scores: best 1.0, worst 0.0 and the others 0.5 when worst is given, else best 1.0 and the others 0.0;
a skipped row gets null scores (`vlmdpo pairs` counts them as unscored). A candidates row with no label
yet is not written, so labelling more and judging again picks it up.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmdpo.engine.judge_io import JudgeError, read_candidates
from vlmdpo.engine.jsonl import read_rows

FIX = "write each line as {\"id\": ..., \"best\": i, \"worst\": j or null, \"skip\": false, \"labeler\": ..., \"time\": ...}"


def _index(value: Any, where: str, field: str, n: int, *, nullable: bool) -> int | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "an index or null" if nullable else "an index"
        raise JudgeError(f"{where}: field '{field}' must be {kind} (got {value!r})", FIX)
    if not 0 <= value < n:
        raise JudgeError(f"{where}: field '{field}' is {value}, but that row has {n} candidate(s) (0..{n - 1})",
                         "label an answer that exists, or relabel the row in the studio")
    return value


def read_labels(path: str | Path, counts: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Each labelled id's last decision, checked against `counts` (candidates per id of the candidates file)."""
    path = Path(path)
    if not path.is_file():
        raise JudgeError(f"{path}: no such labels file", "label the candidates in the studio's label page "
                         "(it writes this file), or pass --labels with its path")
    try:
        rows = list(read_rows(path))
    except ValueError as exc:
        raise JudgeError(str(exc), FIX) from None
    labels: dict[str, dict[str, Any]] = {}
    for n, row in rows:
        where = f"{path}:{n}"
        row_id = row.get("id")
        if not isinstance(row_id, str):
            raise JudgeError(f"{where}: field 'id' must be the candidates row's id, a string (got {row_id!r})", FIX)
        if row_id not in counts:
            raise JudgeError(f"{where}: field 'id': {row_id!r} is not a row of the candidates file",
                             "label the candidates file this labels file belongs to (or remove the line)")
        skip = row.get("skip", False)
        if not isinstance(skip, bool):
            raise JudgeError(f"{where}: field 'skip' must be true or false (got {skip!r})", FIX)
        for field in ("labeler", "time"):
            if not isinstance(row.get(field, ""), str):
                raise JudgeError(f"{where}: field '{field}' must be a string (got {row[field]!r})", FIX)
        best = _index(row.get("best"), where, "best", counts[row_id], nullable=skip)
        worst = _index(row.get("worst"), where, "worst", counts[row_id], nullable=True)
        if best is not None and best == worst:
            raise JudgeError(f"{where}: field 'worst' is the same answer as 'best' ({best})",
                             "pick another answer as the worst, or null")
        labels[row_id] = {"best": best, "worst": worst, "skip": skip, "labeler": row.get("labeler", ""),
                          "time": row.get("time", ""), "line": n}
    return labels


def label_scores(label: dict[str, Any], n: int) -> list[float | None]:
    if label["skip"]:
        return [None] * n
    rest = 0.0 if label["worst"] is None else 0.5
    scores = [rest] * n
    scores[label["best"]] = 1.0
    if label["worst"] is not None:
        scores[label["worst"]] = 0.0
    return scores


class LabelsScorer:
    """A judge_file scorer: a labelled row's scores, or None for a row not labelled yet."""

    def __init__(self, labels_path: str | Path, candidates: str | Path):
        counts = {row["id"]: len(row["candidates"]) for _, row in read_candidates(candidates)}
        self.path = Path(labels_path)
        self.labels = read_labels(self.path, counts)

    def __call__(self, row: dict[str, Any], where: str) -> tuple[list[float | None], dict[str, Any]] | None:
        label = self.labels.get(row["id"])
        if label is None:
            return None
        record = {"by": "labels", "labels": f"{self.path}:{label['line']}", "labeler": label["labeler"],
                  "time": label["time"], "skip": label["skip"]}
        return label_scores(label, len(row["candidates"])), record
