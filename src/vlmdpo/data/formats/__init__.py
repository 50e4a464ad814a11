"""Preference-data readers: one per format, each `read_row(row, ctx) -> PreferenceRecord`
raising `RowProblem` for a row it cannot read. `READERS[name]` is the reader for a format name.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from vlmdpo.data.formats import llamafactory, rlaifv, rlhfv, swift, trl
from vlmdpo.data.formats.common import RowContext, RowProblem
from vlmdpo.data.formats.detect import detect_format
from vlmdpo.types import PreferenceRecord

FORMAT_NAMES = ("trl", "trl_standard", "rlaifv", "rlhfv", "swift", "sharegpt", "alpaca")

# Names users also write; "llamafactory" means "sharegpt or alpaca, decided per file".
ALIASES = {
    "trl_conversational": "trl", "conversational": "trl", "standard": "trl_standard",
    "rlaif-v": "rlaifv", "rlaif_v": "rlaifv", "rlhf-v": "rlhfv", "rlhf_v": "rlhfv",
    "ms-swift": "swift", "ms_swift": "swift", "llama-factory": "llamafactory", "llama_factory": "llamafactory",
}


class Reader(NamedTuple):
    read_row: Callable[[dict, RowContext], PreferenceRecord]
    field_names: Callable[[RowContext], dict[str, str]]


READERS: dict[str, Reader] = {
    "trl": Reader(trl.read_row, trl.field_names),
    "trl_standard": Reader(trl.read_row_standard, trl.field_names),
    "rlaifv": Reader(rlaifv.read_row, rlaifv.field_names),
    "rlhfv": Reader(rlhfv.read_row, rlhfv.field_names),
    "swift": Reader(swift.read_row, swift.field_names),
    "sharegpt": Reader(llamafactory.read_sharegpt, llamafactory.field_names),
    "alpaca": Reader(llamafactory.read_alpaca, llamafactory.field_names),
}


def canonical_format_name(name: str) -> str:
    """A user-given format name -> one of FORMAT_NAMES, "llamafactory" or "auto"; ValueError otherwise."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in FORMAT_NAMES or key in ("auto", "llamafactory"):
        return key
    raise ValueError(f"unknown format {name!r}; use 'auto' or one of {', '.join(FORMAT_NAMES)} "
                     "(or 'llamafactory' for sharegpt/alpaca)")


__all__ = ["FORMAT_NAMES", "READERS", "Reader", "RowContext", "RowProblem", "canonical_format_name",
           "detect_format"]
