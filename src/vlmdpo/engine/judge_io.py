"""Candidates read into `vlmdpo judge` with their file:row (resumable output: `engine/jsonl.py`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from vlmdpo.engine.jsonl import read_rows
from vlmdpo.errors import FixableError


class JudgeError(FixableError):
    """A row, a truth, a judge or an endpoint that `vlmdpo judge` cannot use; names where and how to fix."""


def read_candidates(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """("file:row", row) per non-blank line; a line that is not a JSON object, or a row without an id
    and candidates, is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise JudgeError(f"{path}: no such candidates file", "pass the JSONL written by `vlmdpo sample`")
    for n, row in read_rows(path):
        where = f"{path}:{n}"
        for key, kind in (("id", str), ("candidates", list)):
            if not isinstance(row.get(key), kind):
                raise JudgeError(f"{where}: field '{key}' must be a {kind.__name__}",
                                 "write the row as `vlmdpo sample` does")
        yield where, row
