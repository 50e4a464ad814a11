"""TRL preference rows: conversational (`trl`) and plain-string standard (`trl_standard`).

Conversational: prompt/chosen/rejected are message lists (content a string or parts), images in
`images` (or a single `image`). Without a `prompt` column, chosen/rejected are whole
conversations and the prompt is their longest common prefix of turns (TRL's extract_prompt).
As TRL does, string-content prompts with images but no placeholder get the images in front
of the first user turn. Standard: plain strings, the model's image token inside the prompt.
"""
from __future__ import annotations

from typing import Any, Mapping

from vlmdpo.data.formats.common import (
    MODEL_TOKENS, PLAIN, Placeholders, RowContext, RowProblem, as_list, build_record, insert_images_first,
    is_map, normalize_messages, require, resolve_all, text_message,
)
from vlmdpo.types import Message, PreferenceRecord

KNOWN = frozenset({"prompt", "chosen", "rejected", "images", "image", "rejected_images", "videos"})


def read_row(row: Mapping[str, Any], ctx: RowContext) -> PreferenceRecord:
    return _read(row, ctx, PLAIN, "trl")


def read_row_standard(row: Mapping[str, Any], ctx: RowContext) -> PreferenceRecord:
    return _read(row, ctx, MODEL_TOKENS, "trl_standard")


def field_names(ctx: RowContext) -> dict[str, str]:
    return {}  # TRL's own column names are the normalized ones


def _read(row: Mapping[str, Any], ctx: RowContext, ph: Placeholders, fmt: str) -> PreferenceRecord:
    require(row, ("chosen", "rejected"), fmt)
    inline: list = []
    if row.get("prompt") is None:
        prompt, chosen, rejected, string_first_user = _implicit(row, ph)
    else:
        prompt = _messages(row["prompt"], "prompt", "user", ph, inline)
        chosen = _messages(row["chosen"], "chosen", "assistant", ph, None)
        rejected = _messages(row["rejected"], "rejected", "assistant", ph, None)
        string_first_user = _first_user_is_string(row["prompt"])

    images_field, raw_images = _images_column(row)
    if inline:
        if raw_images:
            raise RowProblem("bad_images", images_field,
                             "images are given both inside the prompt parts and in the images column",
                             "keep one: bare {'type': 'image'} parts plus an images column is the usual form")
        raw_images, images_field = inline, "prompt"
    images = resolve_all(raw_images, images_field, ctx)
    raw_rej = row.get("rejected_images")
    rejected_images = resolve_all(as_list(raw_rej, "rejected_images"), "rejected_images", ctx) \
        if raw_rej is not None else None
    videos = resolve_all(as_list(row.get("videos"), "videos"), "videos", ctx)

    if images and string_first_user and not any(p["type"] == "image" for m in prompt for p in m["content"]):
        insert_images_first(prompt, len(images))
    return build_record(row, ctx, KNOWN, prompt=prompt, chosen=chosen, rejected=rejected, images=images,
                        rejected_images=rejected_images, videos=videos)


def _messages(value: Any, field: str, role: str, ph: Placeholders, inline: list | None) -> list[Message]:
    if isinstance(value, str):
        return [text_message(role, value, field, ph)]
    return normalize_messages(value, field, ph, inline)


def _first_user_is_string(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if isinstance(value, list):
        for m in value:
            if is_map(m) and m.get("role") == "user":
                return isinstance(m.get("content"), str)
    return False


def _images_column(row: Mapping[str, Any]) -> tuple[str, list]:
    images, image = row.get("images"), row.get("image")
    if images is not None and image is not None:
        raise RowProblem("bad_images", "image", "the row has both an 'images' and an 'image' column",
                         "keep one of them (images: a list, image: a single image)")
    if image is not None:
        return "image", [image]
    return "images", as_list(images, "images")


def _implicit(row: Mapping[str, Any], ph: Placeholders) -> tuple[list, list, list, bool]:
    """No prompt column: split chosen/rejected into their shared prefix and the two continuations."""
    c_raw, r_raw = row["chosen"], row["rejected"]
    if isinstance(c_raw, str) and isinstance(r_raw, str):
        idx = _common_text_prefix(c_raw, r_raw)
        if idx == 0:
            raise RowProblem("missing_field", "prompt",
                             "no prompt column, and chosen and rejected share no common prefix to take it from",
                             "add a prompt column")
        return ([text_message("user", c_raw[:idx], "prompt", ph)],
                [text_message("assistant", c_raw[idx:], "chosen", ph)],
                [text_message("assistant", r_raw[idx:], "rejected", ph)], True)
    chosen = normalize_messages(c_raw, "chosen", ph)
    rejected = normalize_messages(r_raw, "rejected", ph)
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == 0:
        raise RowProblem("missing_field", "prompt",
                         "no prompt column, and chosen and rejected share no leading turns to take it from",
                         "add a prompt column, or make chosen/rejected whole conversations with the same first turns")
    return chosen[:n], chosen[n:], rejected[n:], _first_user_is_string(c_raw)


def _common_text_prefix(a: str, b: str) -> int:
    """TRL's rule: the prompt ends where the strings differ, moved back before a separating space."""
    n = min(len(a), len(b))
    idx = 0
    while idx < n and a[idx] == b[idx]:
        idx += 1
    if idx < n and idx > 0 and a[idx - 1] == " ":
        idx -= 1
    return idx
