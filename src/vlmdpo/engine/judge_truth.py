"""`--by truth`: a candidate is right (1.0) or wrong (0.0) against the row's ground truth.

Demo rows (meta.question_kind) are graded as the demo grader does (`demo_data.is_grounded`): the
answer names the true value and no other value of that kind.
"""
from __future__ import annotations

import re
from typing import Any

from vlmdpo.engine.judge_io import JudgeError

MATCHES = ("exact", "contains", "number", "choice")
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?")
_FIX = {"exact": "give `truth` as a string", "contains": "give `truth` as a string",
        "number": "give `truth` as a number (or a string holding one)",
        "choice": "give `truth` as the right option, a string (choices in meta.choices, default A-E)"}


def _norm(text: str) -> str:
    return " ".join(text.casefold().strip().strip(".!?;:\"'").split())


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value.strip().replace(",", "."))
    return None


def check_truth(truth: Any, match: str, where: str) -> None:
    """Refuse a missing truth, or one of the wrong type for `match`, naming the row and the field."""
    if truth is None:
        raise JudgeError(f"{where}: field 'truth' is missing", "add the right answer to each row, or judge "
                         "with --by model / --by implicit")
    if match == "number":
        ok = _as_number(truth) is not None
    else:  # a bare number reads as text for exact / contains ("3" in "3 cats"), not as an option
        ok = isinstance(truth, str) or (match != "choice" and _as_number(truth) is not None)
    if not ok:
        raise JudgeError(f"{where}: field 'truth' is a {type(truth).__name__} ({str(truth)[:40]}), which "
                         f"--match {match} cannot check", _FIX[match])


def is_right(answer: str, truth: Any, match: str, choices: list[str] | None = None) -> bool:
    """Whether `answer` gets `truth` right under `match` (truth already checked by `check_truth`)."""
    if match == "exact":
        return _norm(answer) == _norm(str(truth))
    if match == "contains":
        return re.search(rf"(?<!\w){re.escape(_norm(str(truth)))}(?!\w)", answer.casefold()) is not None
    if match == "number":
        found = _NUMBER.findall(answer)
        return bool(found) and abs(float(found[0].replace(",", ".")) - _as_number(truth)) < 1e-6
    if match == "choice":
        options = [str(c) for c in (choices or "ABCDE")]
        named = {o for o in options if re.search(rf"(?<!\w){re.escape(o)}(?!\w)", answer, flags=re.IGNORECASE)}
        return named == {o for o in options if o.casefold() == str(truth).casefold()} and bool(named)
    raise JudgeError(f"--match {match}: unknown", f"choose one of {', '.join(MATCHES)}")


def truth_scores(row: dict[str, Any], where: str, match: str) -> tuple[list[float], dict[str, Any]]:
    """1.0 / 0.0 per candidate, and what the judge record says about how they were checked."""
    from vlmdpo.demo_data import KINDS, is_grounded

    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    truth = row["truth"] if row.get("truth") is not None else meta.get("truth")
    kind = meta.get("question_kind")
    if kind in KINDS:
        check_truth(truth, "exact", where)
        return ([float(is_grounded(kind, str(truth), c)) for c in row["candidates"]],
                {"by": "truth", "match": f"grounded:{kind}", "truth": str(truth)})
    check_truth(truth, match, where)
    choices = meta.get("choices") if isinstance(meta.get("choices"), list) else None
    return ([float(is_right(c, truth, match, choices)) for c in row["candidates"]],
            {"by": "truth", "match": match, "truth": truth})
