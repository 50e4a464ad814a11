"""RLAIF-V style rows (openbmb/RLAIF-V-Dataset): image, question, chosen, rejected as strings.

The image goes in front of the question, as the dataset's own training code does. Columns
such as ds_name, origin_dataset, idx, image_path land in `meta`.
"""
from __future__ import annotations

from typing import Any, Mapping

from vlmdpo.data.formats.common import (
    PLAIN, RowContext, as_list, build_record, insert_images_first, require, resolve_all, text_message,
)
from vlmdpo.types import PreferenceRecord

KNOWN = frozenset({"image", "images", "question", "chosen", "rejected"})
FIELDS = {"prompt": "question", "images": "image"}


def read_row(row: Mapping[str, Any], ctx: RowContext) -> PreferenceRecord:
    require(row, ("question", "chosen", "rejected"), "rlaifv")
    return make_record(row, ctx, row["question"], row["chosen"], row["rejected"], KNOWN)


def field_names(ctx: RowContext) -> dict[str, str]:
    return FIELDS


def make_record(row: Mapping[str, Any], ctx: RowContext, question: Any, chosen: Any, rejected: Any,
                known: frozenset[str], where: str = "") -> PreferenceRecord:
    """Shared with RLHF-V, whose question/chosen/rejected sit inside a JSON string (`where`)."""
    key = "image" if row.get("image") is not None else "images"
    images = resolve_all(as_list(row.get(key), key), key, ctx)
    prompt = [text_message("user", question, f"{where}question", PLAIN)]
    if images and not any(p["type"] == "image" for p in prompt[0]["content"]):
        insert_images_first(prompt, len(images))
    return build_record(
        row, ctx, known, prompt=prompt,
        chosen=[text_message("assistant", chosen, f"{where}chosen", PLAIN)],
        rejected=[text_message("assistant", rejected, f"{where}rejected", PLAIN)],
        images=images,
    )
