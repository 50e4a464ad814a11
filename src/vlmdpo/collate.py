"""EncodedPairs -> Batch in the plain layout: rows [chosen_0..chosen_{B-1}, rejected_0..].

Each row is prompt + completion, right-padded. Like TRL, the plain path carries every pair's
image inputs twice (once per row); the fast path in `vlmdpo.collate_shared` avoids that.
"""
from __future__ import annotations

from typing import Any

import torch

from vlmdpo.model.families import FamilyAdapter, adapter_for
from vlmdpo.types import Batch, EncodedPair


def collate(pairs: list[EncodedPair], *, pad_token_id: int, family: FamilyAdapter | str,
            pad_to_multiple_of: int | None = None) -> Batch:
    if not pairs:
        raise ValueError("collate needs at least one pair")
    adapter = adapter_for(family)
    prompts = [p.prompt_ids for p in pairs] + [_rejected_prompt(p) for p in pairs]
    answers = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    width = max(len(p) + len(a) for p, a in zip(prompts, answers))
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of

    n = len(prompts)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    completion_mask = torch.zeros((n, width), dtype=torch.long)
    for row, (p, a) in enumerate(zip(prompts, answers)):
        end = len(p) + len(a)
        input_ids[row, :end] = torch.tensor(p + a, dtype=torch.long)
        attention_mask[row, :end] = 1
        completion_mask[row, len(p):end] = 1

    model_inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    vision_rows = [p.vision for p in pairs] + [_rejected_vision(p) for p in pairs]
    model_inputs.update(adapter.stack_vision(vision_rows))
    if adapter.token_type_key is not None:
        model_inputs[adapter.token_type_key] = adapter.token_types(input_ids)
    return Batch(model_inputs=model_inputs, completion_mask=completion_mask, ids=[p.id for p in pairs],
                 num_pairs=len(pairs))


def _rejected_prompt(p: EncodedPair) -> list[int]:
    return p.rejected_prompt_ids if p.rejected_prompt_ids is not None else p.prompt_ids


def _rejected_vision(p: EncodedPair) -> dict[str, Any]:
    return p.rejected_vision if p.rejected_vision is not None else p.vision
