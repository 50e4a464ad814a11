"""RLHF-V style rows (openbmb/RLHF-V-Dataset): `text` is a JSON *string* holding question,
chosen and rejected; the image sits in `image`. Bad JSON in `text` is a row error on `text`.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from vlmdpo.data.formats.common import RowContext, RowProblem, is_map, require
from vlmdpo.data.formats.rlaifv import make_record
from vlmdpo.types import PreferenceRecord

KNOWN = frozenset({"image", "images", "text"})
FIELDS = {"prompt": "text.question", "chosen": "text.chosen", "rejected": "text.rejected", "images": "image"}


def read_row(row: Mapping[str, Any], ctx: RowContext) -> PreferenceRecord:
    require(row, ("text",), "rlhfv")
    text = row["text"]
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RowProblem("bad_json", "text",
                             f"'text' is not valid JSON: {exc.msg} at character {exc.pos}",
                             'write text as a JSON string of {"question": ..., "chosen": ..., "rejected": ...}'
                             ) from None
    if not is_map(text):
        raise RowProblem("bad_json", "text", f"'text' must hold a JSON object, got {type(text).__name__}",
                         'write text as a JSON string of {"question": ..., "chosen": ..., "rejected": ...}')
    missing = [k for k in ("question", "chosen", "rejected") if text.get(k) is None]
    if missing:
        raise RowProblem("missing_field", f"text.{missing[0]}",
                         f"'text' lacks {', '.join(missing)} (has {sorted(text)})",
                         "put question, chosen and rejected inside the text JSON")
    record = make_record(row, ctx, text["question"], text["chosen"], text["rejected"], KNOWN, where="text.")
    for key, value in text.items():
        if key not in ("question", "chosen", "rejected"):
            record.meta[f"text.{key}"] = value
    return record


def field_names(ctx: RowContext) -> dict[str, str]:
    return FIELDS
