"""Rows in and out of `vlmdpo judge`: candidates read with their file:row, scored rows appended so a
killed run resumes where it stopped (each row flushed and fsynced; a half-written last line dropped)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, TextIO

from vlmdpo.errors import FixableError


class JudgeError(FixableError):
    """A row, a truth, a judge or an endpoint that `vlmdpo judge` cannot use; names where and how to fix."""


def read_candidates(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(\"file:row\", row) per non-blank line; a line that is not a JSON object is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise JudgeError(f"{path}: no such candidates file", "pass the JSONL written by `vlmdpo sample`")
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JudgeError(f"{where}: not valid JSON ({exc.msg})", "fix or remove the line") from None
            if not isinstance(row, dict):
                raise JudgeError(f"{where}: a row must be a JSON object", "fix or remove the line")
            for key, kind in (("id", str), ("candidates", list)):
                if not isinstance(row.get(key), kind):
                    raise JudgeError(f"{where}: field '{key}' must be a {kind.__name__}",
                                     "write the row as `vlmdpo sample` does")
            yield where, row


def resume_ids(out: str | Path) -> set[str]:
    """Ids already in `out`; a last line cut mid-write (no newline, or not JSON) is removed first."""
    out = Path(out)
    if not out.exists():
        return set()
    data = out.read_bytes()
    keep = data if data.endswith(b"\n") else data[: data.rfind(b"\n") + 1]
    if keep != data:
        with out.open("r+b") as fh:
            fh.truncate(len(keep))
    ids = set()
    for n, line in enumerate(keep.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            ids.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise JudgeError(f"{out}:{n}: not a scored row", "pass a new -o file, or delete this one") from None
    return ids


def append_row(fh: TextIO, row: dict[str, Any]) -> None:
    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    fh.flush()
    os.fsync(fh.fileno())
