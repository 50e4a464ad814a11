"""Position ids for fast layouts: every document restarts at 0, and in a shared document the
rejected tokens continue from the prompt's end (as if chosen were not there).

Qwen2-VL, Qwen2.5-VL and Qwen3-VL use 3D mRoPE positions: the prompt's positions come from the
model's own `get_rope_index` (run on the prompts alone), and completion tokens, being text,
continue at `max(prompt positions) + 1` on all three axes -- which is what `get_rope_index`
gives the completion in the plain layout.
"""
from __future__ import annotations

from typing import Any

import torch

from vlmdpo.model.families import FamilyAdapter
from vlmdpo.types import SharedBatch


def mrope_position_ids(inner: Any, batch: SharedBatch, device: torch.device, family: FamilyAdapter) -> torch.Tensor:
    """[3, R, T] mRoPE position ids for `batch`, via `inner.get_rope_index` on the prompts."""
    docs = batch.docs
    ids = batch.input_ids
    P = max(d.prompt_len for d in docs)
    prompts = torch.zeros((len(docs), P), dtype=torch.long)
    amask = torch.zeros((len(docs), P), dtype=torch.long)
    for i, d in enumerate(docs):
        prompts[i, : d.prompt_len] = ids[d.row, d.start: d.start + d.prompt_len]
        amask[i, : d.prompt_len] = 1
    prompts, amask = prompts.to(device), amask.to(device)
    kwargs = {k: batch.vision[k].to(device) for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")
              if k in batch.vision}
    pos, _ = inner.get_rope_index(
        input_ids=prompts, mm_token_type_ids=family.token_types(prompts, inner.config), attention_mask=amask, **kwargs
    )
    out = torch.zeros((3, *ids.shape), dtype=torch.long, device=device)
    for i, d in enumerate(docs):
        p = pos[:, i, : d.prompt_len]
        out[:, d.row, d.start: d.start + d.prompt_len] = p
        nxt = p.max() + 1
        for _, col, n in d.parts:
            out[:, d.row, col: col + n] = nxt + torch.arange(n, device=device)
    return out


def position_ids(inner: Any, batch: SharedBatch, device: torch.device, family: FamilyAdapter) -> torch.Tensor:
    """[R, T] (1D rope) or [3, R, T] (mRoPE, `family.rope`) position ids."""
    if family.rope == "mrope":
        return mrope_position_ids(inner, batch, device, family)
    return batch.positions.to(device)
