"""Where a prompt may be cut: TRL's max_prompt_length, from the left, in text only.

Pure functions on token ids; `encode.py` applies them and turns a refused cut into a length drop.
"""
from __future__ import annotations

from typing import Collection, Sequence


def media_start(prompt_ids: Sequence[int], text_ids: Sequence[int], special: Collection[int],
                media_ids: Collection[int] = ()) -> int:
    """Position of the first image / video token in `prompt_ids` (the processor's ids, images
    expanded), found against `text_ids` (the same text tokenized without images): the first
    position where they differ or a known media token sits, moved back over the special tokens
    that open the image span (<|vision_start|>, <fake_token_around_image>, ...).
    len(prompt_ids) when the prompt has no media."""
    i = 0
    n = min(len(prompt_ids), len(text_ids))
    while i < n and prompt_ids[i] == text_ids[i] and prompt_ids[i] not in media_ids:
        i += 1
    if i == len(prompt_ids):
        return i
    while i > 0 and prompt_ids[i - 1] in special:
        i -= 1
    return i


def cut_left(ids: list[int], limit: int, start_of_media: int) -> list[int] | None:
    """`ids` without its oldest tokens, to `limit`; None when the cut would reach `start_of_media`."""
    cut = len(ids) - limit
    if cut <= 0:
        return ids
    return ids[cut:] if cut <= start_of_media else None
