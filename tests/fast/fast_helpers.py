"""Shared pieces of the fast-path tests: tiny models, a few encoded pairs, the plain path."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from vlmdpo.batching.plain import collate
from vlmdpo.encode import encode_pair
from vlmdpo.model.families import adapter_for
from vlmdpo.model.logps import batch_logps
from vlmdpo.model.tiny import build_tiny
from vlmdpo.types import ImageRef, PreferenceRecord

ATOL_LOGP = 1e-5
ATOL_GRAD = 1e-4


def image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), mode="RGB")


def _msg(role: str, *parts) -> dict:
    return {"role": role, "content": [p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts]}


IMG = {"type": "image"}


def records(family: str) -> list[PreferenceRecord]:
    """Pairs of different shapes: one image, text only, two images, image-contrast."""
    a = lambda t: [_msg("assistant", t)]  # noqa: E731
    out = [
        PreferenceRecord("one-image", [_msg("user", IMG, "What is in the picture?")],
                         a("A red square on a blue field, seen from above."), a("A cat."),
                         images=[ImageRef(pil=image(64, 48, 1))]),
        PreferenceRecord("text-only", [_msg("system", "Be brief."), _msg("user", "Say hello.")],
                         a("Hello."), a("Good morning to you, and a very fine day it is."), images=[]),
    ]
    if family == "causal_lm":
        return out[1:] + [PreferenceRecord("text-2", [_msg("user", "Count to three.")], a("One, two, three."),
                                           a("Three."), images=[])]
    if adapter_for(family).supports_multi_image:
        out.append(PreferenceRecord("two-images", [_msg("user", IMG, "and", IMG, "which is brighter?")],
                                    a("The second one."), a("Neither of them is bright at all."),
                                    images=[ImageRef(pil=image(48, 64, 2)), ImageRef(pil=image(56, 56, 3))]))
    out.append(PreferenceRecord("contrast", [_msg("user", IMG, "Describe it.")], a("Stripes."), a("Stripes."),
                                images=[ImageRef(pil=image(64, 64, 4))], rejected_images=[ImageRef(pil=image(64, 64, 5))]))
    return out


@lru_cache(maxsize=None)
def tiny(family: str, attn: str = "eager"):
    model, processor = build_tiny(family, attn_implementation=attn)
    return model, processor, adapter_for(model)


@lru_cache(maxsize=None)
def encoded(family: str):
    _, processor, adapter = tiny(family)
    return tuple(encode_pair(r, processor, adapter, max_length=None) for r in records(family))


def pad_id(processor) -> int:
    return getattr(processor, "tokenizer", processor).pad_token_id


def plain_logps(model, processor, adapter, pairs):
    batch = collate(list(pairs), pad_token_id=pad_id(processor), family=adapter)
    return batch_logps(model, batch)


def grads_of(model, fn) -> tuple[object, dict[str, torch.Tensor]]:
    """Run fn(), backprop a fixed weighting of its log-probs, return (output, grads)."""
    model.zero_grad(set_to_none=True)
    out = fn()
    w = torch.arange(1, out.chosen_logps.numel() + 1, dtype=torch.float32)
    (w * out.chosen_logps - 0.5 * w * out.rejected_logps).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out, grads
