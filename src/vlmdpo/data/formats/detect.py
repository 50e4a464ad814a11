"""Which format a row is in, from its keys (and, for TRL, whether chosen is a string).

Order matters: the most specific key sets come first, TRL's bare chosen/rejected last.
"""
from __future__ import annotations

from typing import Any, Mapping

# (format, keys that must all be present and not null, one-line description for error messages)
SIGNATURES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("swift", ("messages", "rejected_response"), "messages, rejected_response (+ images)"),
    ("sharegpt", ("conversations", "chosen", "rejected"), "conversations, chosen, rejected (+ images)"),
    ("sharegpt", ("messages", "chosen", "rejected"), "messages, chosen, rejected (LLaMA-Factory OpenAI style)"),
    ("alpaca", ("instruction", "chosen", "rejected"), "instruction, chosen, rejected (+ input, images)"),
    ("rlaifv", ("question", "chosen", "rejected"), "question, chosen, rejected (+ image)"),
    ("rlhfv", ("text",), "text (a JSON string of question/chosen/rejected) + image"),
    ("trl", ("chosen", "rejected"), "prompt, chosen, rejected (+ images); prompt optional"),
)

REQUIRED_KEYS_HELP = "; ".join(f"{name}: {desc}" for name, _, desc in SIGNATURES)


def detect_format(row: Mapping[str, Any]) -> tuple[str, tuple[str, ...]] | None:
    """(format name, the keys that decided it) or None when no signature matches."""
    for name, keys, _ in SIGNATURES:
        if all(row.get(k) is not None for k in keys):
            if name == "rlhfv" and ("chosen" in row or "rejected" in row):
                continue
            if name == "trl" and isinstance(row.get("chosen"), str):
                return "trl_standard", keys
            return name, keys
    return None


def closest_format(row: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """The signature sharing most keys with the row, and what it lacks (for 'did you mean')."""
    best = None
    for name, keys, _ in SIGNATURES:
        have = [k for k in keys if row.get(k) is not None]
        if not have:
            continue
        missing = [k for k in keys if row.get(k) is None]
        score = (len(have), -len(missing))
        if best is None or score > best[0]:
            best = (score, name, missing)
    return (best[1], best[2]) if best else None


def explain_unknown(row: Mapping[str, Any]) -> str:
    keys = sorted(row)
    text = f"no known preference format matches this row's keys {keys}"
    near = closest_format(row)
    if near and near[1]:
        text += f"; closest is {near[0]}, which also needs {', '.join(near[1])}"
    return text + f". Formats and their keys: {REQUIRED_KEYS_HELP}"


def detection_note(file: str, name: str, keys: tuple[str, ...], origin: str = "") -> str:
    how = f"from {origin}" if origin else f"keys {', '.join(keys)}"
    return f"{file}: format detected as {name} ({how})"
