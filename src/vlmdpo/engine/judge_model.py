"""`--by model`: a VLM judge compares two candidates at a time with a rubric and answers A or B.

Every pair is asked in both orders so a judge that favours a position cancels out: a win in both
orders scores 1, a split 0.5; an answer that names neither A nor B counts as a tie and is recorded.
A candidate's score is its mean over its opponents.
"""
from __future__ import annotations

import re
from itertools import combinations
from typing import Any, Callable

DEFAULT_RUBRIC = """You are judging two answers to the same request about the image(s).
Request:
{question}

Answer A:
{answer_a}

Answer B:
{answer_b}

Which answer is more accurate, grounded in what the image shows, and helpful? Explain briefly, then end
with a last line that is exactly "A" or "B"."""

# ask(messages, images) -> the judge's reply text
Ask = Callable[[list[dict], list[str]], str]
_LAST = re.compile(r"(?:answer|verdict|winner|better|final)\W{0,3}(?:is\W{0,3})?\(?\b([AB])\b", re.IGNORECASE)


def parse_verdict(text: str) -> str | None:
    """"A" or "B" from a judge's reply: a bare letter, "Answer: A" style, or the only letter on the last line."""
    bare = text.strip().strip(".*()[]\"' ").upper()
    if bare in ("A", "B"):
        return bare
    found = _LAST.findall(text)
    if found:
        return found[-1].upper()
    last = text.strip().splitlines()[-1] if text.strip() else ""
    letters = set(re.findall(r"\b([AB])\b", last))
    return letters.pop() if len(letters) == 1 else None


def judge_messages(rubric: str, prompt: list[dict], answer_a: str, answer_b: str) -> list[dict]:
    """One user turn: the request's images first, then the rubric filled in."""
    from vlmdpo.compare import message_text

    n_images = sum(p.get("type") == "image" for m in prompt for p in (m["content"] if isinstance(m["content"], list)
                                                                      else []))
    text = rubric.format(question=message_text(prompt), answer_a=answer_a, answer_b=answer_b)
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}]


def model_scores(row: dict[str, Any], ask: Ask, rubric: str) -> tuple[list[float | None], list[dict[str, Any]]]:
    """Win rate per candidate over both-order comparisons, and each comparison's raw reply and verdict."""
    cands = row["candidates"]
    points = [0.0] * len(cands)
    games = [0] * len(cands)
    asked: list[dict[str, Any]] = []
    for i, j in combinations(range(len(cands)), 2):
        pair_points = 0.0  # i's points over the two orders
        for a, b in ((i, j), (j, i)):
            reply = ask(judge_messages(rubric, row["prompt"], cands[a], cands[b]), row.get("images") or [])
            verdict = parse_verdict(reply)
            winner = {"A": a, "B": b}.get(verdict or "")
            pair_points += 0.5 if winner is None else float(winner == i)
            asked.append({"a": a, "b": b, "reply": reply, "verdict": verdict or "unparseable (tie)"})
        points[i] += pair_points / 2
        points[j] += 1 - pair_points / 2
        games[i] += 1
        games[j] += 1
    return [p / g if g else None for p, g in zip(points, games)], asked
