"""Deterministic synthetic preference pairs with exact token lengths (TRL conversational layout).

Each text is drawn from English words that are one token each (with their leading space) in
SmolLM2's tokenizer and in the Qwen2-VL stand-in, plus one "." per sentence, so a text of n
tokens tokenizes to about n tokens. Everything is a pure function of the seed.
"""
from __future__ import annotations

import random

import numpy as np

WORDS = (
    "the of and to in is was for on that with as by at from it an be this are or which his has had not "
    "but they were have their one all been more also its can when who there other than into first time "
    "some new after two would them only about over these most such many where during used later made "
    "well may both part while through under between three city people then world each could year state "
    "since work years out up very known like because same before being water area found high small large "
    "group long number however around red blue green white black yellow light dark image picture photo "
    "scene left right top bottom center background front shows shown view near far road tree trees house "
    "car cars street sky cloud clouds man woman person child dog cat bird table chair window door wall "
    "floor room building field grass river lake mountain boat train bus sign text letter word page chart "
    "graph line bar value shape circle square round bright color colors object objects big tall short "
    "wide open closed empty full side corner edge middle several few any every another either answer "
    "question describe looks appears seems contains here what how why"
).split()


def make_text(rng: random.Random, n_tokens: int) -> str:
    out, used = [], 0
    n_tokens = max(int(n_tokens), 1)
    while used < n_tokens:
        left = n_tokens - used
        k = min(rng.randint(6, 14), left - 1) if left > 1 else 0
        if k <= 0:
            out.append(rng.choice(WORDS))
            break
        out.append(" ".join(rng.choice(WORDS) for _ in range(k)) + ".")
        used += k + 1
    return " ".join(out)


def make_image(np_rng: np.random.Generator, size: int):
    """A smooth random RGB image (8x8 colour grid, bilinear-upsampled, light noise)."""
    from PIL import Image

    grid = np_rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(grid, mode="RGB").resize((size, size), resample=Image.BILINEAR), dtype=np.int16)
    arr = arr + np_rng.integers(-8, 9, size=arr.shape, dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")


def make_rows(n: int, *, image_size: int, prompt_tokens: int, chosen_tokens: int, rejected_tokens: int | None = None,
              seed: int = 0) -> list[dict]:
    """`n` rows {"images": [PIL], "prompt": [...], "chosen": [...], "rejected": [...]} (string contents)."""
    rejected_tokens = chosen_tokens if rejected_tokens is None else rejected_tokens
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        img = make_image(np_rng, image_size)
        rows.append({"images": [img],
                     "prompt": [{"role": "user", "content": make_text(rng, prompt_tokens)}],
                     "chosen": [{"role": "assistant", "content": make_text(rng, chosen_tokens)}],
                     "rejected": [{"role": "assistant", "content": make_text(rng, rejected_tokens)}]})
    return rows
