"""`vlmdpo pairs`: scored candidates -> TRL conversational preference pairs (prompt, chosen, rejected, images).

best-worst keeps one pair per prompt (the highest and the lowest score); all keeps every pair whose scores
differ by more than the margin. Identical answers count once (their scores averaged). Ties, small margins and
prompts whose answers are all one text are dropped and counted, as are unscored answers.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

STRATEGIES = ("best-worst", "all")


@dataclass
class PairCounts:
    prompts: int = 0
    pairs: int = 0
    ties: int = 0
    low_margin: int = 0
    one_answer: int = 0  # prompts whose scored answers are all the same text: nothing to prefer
    unscored: int = 0  # answers with a null score

    def summary(self) -> str:
        return (f"{self.prompts} prompt(s), {self.pairs} pair(s) written; dropped: {self.ties} tie(s), "
                f"{self.low_margin} below the margin, {self.one_answer} prompt(s) with one distinct answer; "
                f"{self.unscored} unscored answer(s) left out")


def _bad(where: str, field: str, message: str, fix: str) -> ValueError:
    return ValueError(f"{where}: field '{field}': {message} -> {fix}")


def scored_answers(row: dict[str, Any], where: str) -> list[tuple[str, float | None]]:
    """(answer, score) per candidate, after checking the row's shape."""
    cands, scores = row.get("candidates"), row.get("scores")
    if not isinstance(cands, list) or not all(isinstance(c, str) for c in cands):
        raise _bad(where, "candidates", "missing or not a list of strings", "pass the output of `vlmdpo sample`")
    if not isinstance(scores, list):
        raise _bad(where, "scores", "missing or not a list", "pass the output of `vlmdpo judge` (scored rows)")
    if len(scores) != len(cands):
        raise _bad(where, "scores", f"{len(scores)} score(s) for {len(cands)} candidate(s)",
                   "give one score (or null) per candidate")
    for i, s in enumerate(scores):
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s)):
            raise _bad(where, f"scores[{i}]", f"{s!r} is not a number or null", "use a finite number, or null")
    if not isinstance(row.get("prompt"), list):
        raise _bad(where, "prompt", "missing or not a list of messages", "pass the output of `vlmdpo sample`")
    return list(zip(cands, scores))


def choose_pairs(answers: list[tuple[str, float | None]], strategy: str, min_margin: float,
                 counts: PairCounts) -> list[tuple[str, str]]:
    """(chosen, rejected) texts for one prompt; drops counted into `counts`."""
    by_text: dict[str, list[float]] = {}
    for a, s in answers:
        if s is not None:
            by_text.setdefault(a, []).append(float(s))
    counts.unscored += len(answers) - sum(len(v) for v in by_text.values())
    # one answer sampled twice is one answer (its scores averaged): never a pair with itself
    scored = [(a, sum(v) / len(v)) for a, v in by_text.items()]
    if len(scored) < 2:
        counts.one_answer += len(scored)  # all unscored: counted as unscored answers only
        return []
    if strategy == "best-worst":
        candidates = [(max(scored, key=lambda a: a[1]), min(scored, key=lambda a: a[1]))]
    else:  # each unordered pair once, the higher score first
        candidates = [(a, b) if a[1] >= b[1] else (b, a) for i, a in enumerate(scored) for b in scored[i + 1:]]
    out = []
    for (good, hi), (bad, lo) in candidates:
        if hi == lo:
            counts.ties += 1
        elif hi - lo <= min_margin:
            counts.low_margin += 1
        else:
            out.append((good, bad))
    return out


def pair_rows(row: dict[str, Any], chosen_rejected: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
    for k, (good, bad) in enumerate(chosen_rejected):
        yield {"id": f"{row.get('id')}-{k}" if len(chosen_rejected) > 1 else str(row.get("id")),
               "prompt": row["prompt"],
               "chosen": [{"role": "assistant", "content": [{"type": "text", "text": good}]}],
               "rejected": [{"role": "assistant", "content": [{"type": "text", "text": bad}]}],
               "images": list(row.get("images") or [])}


def make_pairs(scored: Path, out: Path, *, strategy: str = "best-worst", min_margin: float = 0.0) -> PairCounts:
    """Write `out` (whole, atomically) from the scored candidates file `scored`."""
    from vlmdpo.atomic import write_text
    from vlmdpo.engine.jsonl import read_rows

    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if min_margin < 0:
        raise ValueError(f"--min-margin {min_margin}: must be >= 0")
    counts = PairCounts()
    lines = []
    for n, row in read_rows(scored):
        counts.prompts += 1
        chosen = choose_pairs(scored_answers(row, f"{scored}:{n}"), strategy, min_margin, counts)
        for pair in pair_rows(row, chosen):
            lines.append(json.dumps(pair, ensure_ascii=False))
    counts.pairs = len(lines)
    write_text(out, "".join(line + "\n" for line in lines))
    return counts
