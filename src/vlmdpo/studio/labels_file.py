"""The Label page's files: the candidates queue it reads, the labels file it writes, the pairs made from them.

The labels file is the contract with `vlmdpo judge --by labels`; its rules and reader live in
engine/judge_labels.py (check_label, read_labels), used here too. Rows are appended with fsync; the last
row of an id wins; undo removes the file's last row (atomic rewrite). Pairs are derived, never edited: best vs each other answer of its row
(a pick of the best says it beats every other one), leaving out answers that are blank or the same
text as the best (DPO cannot learn from them); the pairs file is rewritten whole after each change.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

MAX_LISTED = 5


class QueueError(ValueError):
    """A candidates or labels file the page cannot use; the message names file:row:field for each problem."""

    def __init__(self, problems: list[str], fix: str):
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        super().__init__("\n".join(problems[:MAX_LISTED]) + more)
        self.problems, self.fix = problems, fix


@dataclass(frozen=True)
class Item:
    index: int
    row: dict[str, Any]  # as in the file
    images: list[str]  # absolute paths, data URIs or URLs
    where: str  # file:line, for errors


def _image(value: Any, folder: Path, where: str, problems: list[str]) -> str:
    if not isinstance(value, str) or not value:
        problems.append(f"{where}: not an image path or data URI; write it as `vlmdpo sample` does")
        return ""
    if value.startswith(("data:", "http://", "https://")):
        return value
    path = Path(value).expanduser()
    path = path if path.is_absolute() else folder / path
    if not path.is_file():
        problems.append(f"{where}: {value} does not exist; fix the path (relative paths are read from the "
                        "candidates file's folder) or drop the row")
    return str(path.resolve())


def read_queue(path: Path) -> list[Item]:
    """Every row checked: an id (unique), prompt messages, images that exist, two or more answers."""
    from vlmdpo.engine.jsonl import read_rows

    problems: list[str] = []
    items: list[Item] = []
    seen: dict[str, str] = {}
    try:
        rows = list(read_rows(path))
    except (OSError, ValueError) as exc:
        raise QueueError([str(exc)], "pass a candidates file as `vlmdpo sample` writes it") from None
    for n, row in rows:
        at = f"{path}:{n}"
        rid, answers, prompt = row.get("id"), row.get("candidates"), row.get("prompt")
        if not isinstance(rid, str) or not rid:
            problems.append(f"{at}: field 'id': missing or not a string")
        elif rid in seen:
            problems.append(f"{at}: field 'id': {rid!r} is also the id of {seen[rid]}; give each row its own id")
        else:
            seen[rid] = at
        if not isinstance(prompt, list) or not prompt:
            problems.append(f"{at}: field 'prompt': missing or not a list of messages")
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            problems.append(f"{at}: field 'candidates': missing or not a list of answer strings")
        elif len(answers) < 2:
            problems.append(f"{at}: field 'candidates': {len(answers)} answer(s); a pick needs at least 2 "
                            "(sample with -n 2 or more, or drop the row)")
        images = row.get("images") or []
        if not isinstance(images, list):
            problems.append(f"{at}: field 'images': not a list")
            images = []
        found = [_image(v, path.parent, f"{at}: field 'images[{k}]'", problems) for k, v in enumerate(images)]
        items.append(Item(len(items), row, found, at))
    if problems:
        raise QueueError(problems, "fix or remove these rows in the candidates file")
    if not items:
        raise QueueError([f"{path}: no rows"], "pass a candidates file with rows (vlmdpo sample writes one)")
    return items


# ------------------------------------------------------------------------------------ labels
def label_row(row_id: str, best: int | None, worst: int | None, skip: bool, labeler: str) -> dict[str, Any]:
    return {"id": row_id, "best": best, "worst": worst, "skip": skip, "labeler": labeler,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def append_label(path: Path, row: dict[str, Any]) -> None:
    from vlmdpo.engine.jsonl import append_row

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        append_row(fh, row)


def undo_last(path: Path) -> dict[str, Any] | None:
    """Remove the file's last decision (the file rewritten atomically); None when there is none."""
    from vlmdpo.atomic import write_text

    if not path.exists():
        return None
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        return None
    write_text(path, "".join(line + "\n" for line in lines[:-1]))
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------------- pairs
def pairs_for(answers: list[str], decision: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    """(chosen, rejected) texts for one decision, and how many answers were left out (blank or same text)."""
    if decision["skip"] or decision["best"] is None:
        return [], 0
    best = answers[decision["best"]]
    others = [a for k, a in enumerate(answers) if k != decision["best"]]
    if not best.strip():
        return [], len(others)
    kept = [a for a in others if a.strip() and a.strip() != best.strip()]
    return [(best, a) for a in kept], len(others) - len(kept)


def write_pairs(items: list[Item], decisions: dict[str, dict[str, Any]], path: Path,
                meta: dict[str, Any]) -> tuple[int, int]:
    """The whole pairs file from the decisions (atomic); returns (pairs written, answers left out)."""
    from vlmdpo.atomic import write_text
    from vlmdpo.engine.pairs import pair_rows

    lines, left_out = [], 0
    for item in items:
        decision = decisions.get(item.row["id"])
        if decision is None:
            continue
        chosen, dropped = pairs_for(item.row["candidates"], decision)
        left_out += dropped
        base = {"id": item.row["id"], "prompt": item.row["prompt"], "images": item.images}
        for pair in pair_rows(base, chosen):
            pair["meta"] = {**meta, "candidates_id": item.row["id"], "labeler": decision["labeler"]}
            lines.append(json.dumps(pair, ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "".join(line + "\n" for line in lines))
    return len(lines), left_out


def file_key(path: Path) -> tuple[str, int, int]:
    """Identity of a file's current content, for caching a parsed queue."""
    st = os.stat(path)
    return str(path), st.st_mtime_ns, st.st_size
