"""What every config group shares: pydantic settings, `peer` names, and the small check helpers."""
from __future__ import annotations

import difflib
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field


class Keys(BaseModel):
    """A group of config keys. Each key's description is the docstring under it."""

    # coerce_numbers_to_str: `output_dir=2024` on the command line is a folder name, not an error
    model_config = ConfigDict(extra="forbid", validate_default=True, protected_namespaces=(),
                              coerce_numbers_to_str=True, use_attribute_docstrings=True)

    def problems(self) -> list[str]:
        """This group's cross-field problems, one line each, starting with the key."""
        return []


def peer(default: Any, *, trl: str | None = None, llamafactory: str | None = None) -> Any:
    """A field default plus the names TRL and LLaMA-Factory give the same setting ("~name": similar, not equal)."""
    names = {k: v for k, v in (("trl", trl), ("llamafactory", llamafactory)) if v}
    return Field(default, json_schema_extra=names)


def hf(default: Any, name: str) -> Any:
    """A key with the same name in HF TrainingArguments, hence in TRL and LLaMA-Factory."""
    return peer(default, trl=name, llamafactory=name)


def at_least_one(cfg: Any, required: Sequence[str] = (), optional: Sequence[str] = ()) -> list[str]:
    """Problems for integer keys that must be >= 1 (`optional` ones may also be left out)."""
    out = [f"{key}: must be >= 1 (got {getattr(cfg, key)})" for key in required if getattr(cfg, key) < 1]
    for key in optional:
        value = getattr(cfg, key)
        if value is not None and value < 1:
            out.append(f"{key}: must be >= 1 or left out (got {value})")
    return out


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice `word` was most likely meant to be, for "did you mean" hints."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown(kind: str, word: str, choices: Sequence[str]) -> str:
    """"unknown loss 'sigmod' (did you mean 'sigmoid'?); valid: sigmoid, ipo, ..." """
    close = closest(word, choices)
    hint = f" (did you mean '{close}'?)" if close else ""
    return f"unknown {kind} '{word}'{hint}; valid: {', '.join(choices)}"
