"""Attention masks for shared-prefix and packed layouts.

A query token sees a key token when both belong to the same document, the key is not later in
the row, and the key is either a prompt token or on the query's own branch (so rejected never
sees chosen). Gemma 3 adds bidirectional attention inside each image; sliding-window layers
also require `pos_q - pos_kv < window` in *logical* positions, which is what the plain layout
measures. Padding queries see only themselves, so no softmax row is empty.

transformers 5.23 passes a 4D mask through unchanged (`masking_utils._preprocess_mask_arguments`).
sdpa takes a boolean [R, 1, T, T] mask, eager an additive float one; flex_attention a BlockMask
(block-sparse: it skips the masked blocks, which matters for long packed rows);
flash_attention_2 takes no custom mask, so the shared-prefix layout is not offered there.
"""
from __future__ import annotations

from typing import Any

import torch

DENSE_MASK_IMPLEMENTATIONS = ("sdpa", "eager")
SHARED_PREFIX_IMPLEMENTATIONS = ("sdpa", "eager", "flex_attention")


def image_blocks(input_ids: torch.Tensor, doc: torch.Tensor, image_token_id: int | None) -> torch.Tensor | None:
    """Id of each run of consecutive image tokens (-1 elsewhere), as Gemma 3's token_type_ids give."""
    if image_token_id is None:
        return None
    is_img = (input_ids == image_token_id) & (doc >= 0)
    prev = torch.nn.functional.pad(is_img, (1, 0), value=False)[:, :-1]
    prev_doc = torch.nn.functional.pad(doc, (1, 0), value=-1)[:, :-1]
    start = is_img & (~prev | (prev_doc != doc))
    ids = torch.cumsum(start.long(), dim=1) - 1
    return torch.where(is_img, ids, torch.full_like(ids, -1))


def visibility(
    doc: torch.Tensor,
    branch: torch.Tensor,
    positions: torch.Tensor,
    *,
    blocks: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Boolean [R, T(q), T(kv)]: True where the query may attend to the key."""
    R, T = doc.shape
    idx = torch.arange(T, device=doc.device)
    causal = idx[:, None] >= idx[None, :]
    dq, dk = doc[:, :, None], doc[:, None, :]
    same = (dq == dk) & (dq >= 0)
    bq, bk = branch[:, :, None], branch[:, None, :]
    vis = same & (causal[None] & ((bk == 0) | (bk == bq)))
    if blocks is not None:
        gq, gk = blocks[:, :, None], blocks[:, None, :]
        vis = vis | (same & (gq == gk) & (gq >= 0))
    if window is not None:
        vis = vis & ((positions[:, :, None] - positions[:, None, :]) < window)
    pad_self = (doc < 0)[:, :, None] & torch.eye(T, dtype=torch.bool, device=doc.device)[None]
    return vis | pad_self


def additive(vis: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[R, 1, T, T] float mask: 0 where visible, the dtype's minimum elsewhere (finite, so eager's
    `scores + mask` cannot overflow into an all -inf row)."""
    zero = torch.zeros((), dtype=dtype, device=vis.device)
    low = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=vis.device)
    return torch.where(vis, zero, low).unsqueeze(1)


def block_mask(
    doc: torch.Tensor, branch: torch.Tensor, positions: torch.Tensor, *,
    blocks: torch.Tensor | None = None, window: int | None = None,
) -> Any:
    """The same rule as `visibility`, as a FlexAttention BlockMask."""
    from torch.nn.attention.flex_attention import create_block_mask

    R, T = doc.shape

    def mask_mod(b, h, q, kv):
        same = (doc[b, q] == doc[b, kv]) & (doc[b, q] >= 0)
        ok = same & (kv <= q) & ((branch[b, kv] == 0) | (branch[b, kv] == branch[b, q]))
        if blocks is not None:
            ok = ok | (same & (blocks[b, q] == blocks[b, kv]) & (blocks[b, q] >= 0))
        if window is not None:
            ok = ok & ((positions[b, q] - positions[b, kv]) < window)
        return ok | ((doc[b, q] < 0) & (q == kv))

    return create_block_mask(mask_mod, B=R, H=None, Q_LEN=T, KV_LEN=T, device=doc.device)


def layer_types(config: Any) -> list[str]:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    types = getattr(text, "layer_types", None)
    return list(types) if types else ["full_attention"]


def build_attention_mask(
    doc: torch.Tensor,
    branch: torch.Tensor,
    positions: torch.Tensor,
    *,
    config: Any,
    attn_implementation: str,
    dtype: torch.dtype,
    blocks: torch.Tensor | None = None,
) -> Any:
    """The mask to hand to the model: one 4D mask, or a dict per layer type for models with
    sliding-window layers (their text models accept a prepared mapping)."""
    if attn_implementation not in SHARED_PREFIX_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation {attn_implementation!r} takes no custom attention mask, so the shared-prefix "
            f"layout cannot run on it -> set shared_prefix: false, or use one of {', '.join(SHARED_PREFIX_IMPLEMENTATIONS)}"
        )
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    kinds = layer_types(config)

    def make(window: int | None):
        if attn_implementation == "flex_attention":
            return block_mask(doc, branch, positions, blocks=blocks, window=window)
        vis = visibility(doc, branch, positions, blocks=blocks, window=window)
        # sdpa takes a boolean mask (True = attend) whatever dtype autocast gives the queries;
        # eager adds the mask to its scores, so it needs the additive form.
        return vis.unsqueeze(1) if attn_implementation == "sdpa" else additive(vis, dtype)

    if "sliding_attention" not in kinds:
        return make(None)
    unknown = set(kinds) - {"full_attention", "sliding_attention"}
    if unknown:
        raise ValueError(f"layer types {sorted(unknown)} are not supported by the shared-prefix layout -> set shared_prefix: false")
    return {"full_attention": make(None), "sliding_attention": make(int(text.sliding_window))}
