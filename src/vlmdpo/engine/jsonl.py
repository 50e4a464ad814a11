"""Resumable JSON-lines output: each row is one line written, flushed and fsynced, so a kill loses at most
the row in progress; on resume a torn last line (no newline, or not JSON) is cut off before appending."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Iterator


def done_ids(path: Path) -> set[str]:
    """Ids of the complete rows already in `path`; a torn last line is truncated away (the file is
    rewritten in place only by that cut). A missing file has none."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]  # text after the last newline was being written
    keep = len(complete)
    lines = complete.split(b"\n")[:-1]
    ids: set[str] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ids.add(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            if n == len(lines):  # a complete-looking but unreadable last line: also the one in progress
                keep -= len(line) + 1
                break
            raise ValueError(f"{path}:{n}: not a JSON row with an 'id'; this is not a file `vlmdpo` "
                             "wrote -- pass a new -o file or fix that line") from None
    if keep != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(keep)
    return ids


def append_row(fh: IO[str], row: dict[str, Any]) -> None:
    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, row) for each non-empty line; a line that is not a JSON object is an error
    naming file:line."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg}); fix or remove that line") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object per line, got {type(row).__name__}")
            yield n, row
