"""The plain layout: rows [prompt+chosen]_0..B-1, then [prompt+rejected]_0..B-1, right-padded.

Like TRL, every row carries its pair's image inputs (twice per pair). The rows are *documents*
(`Doc`); the fast layouts in `vlmdpo.batching.shared` place the same documents differently.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlmdpo.model.families import FamilyAdapter, adapter_for
from vlmdpo.types import CHOSEN, REJECTED, Batch, EncodedPair


@dataclass(frozen=True)
class Doc:
    """A prompt (with its vision inputs) followed by one completion, or by chosen then rejected."""

    pair: int
    prompt: list[int]
    vision: dict[str, Any]
    parts: tuple[tuple[int, list[int]], ...]  # (CHOSEN or REJECTED, completion ids)

    @property
    def length(self) -> int:
        return len(self.prompt) + sum(len(ids) for _, ids in self.parts)


def chosen_doc(i: int, p: EncodedPair) -> Doc:
    return Doc(i, p.prompt_ids, p.vision, ((CHOSEN, p.chosen_ids),))


def rejected_doc(i: int, p: EncodedPair) -> Doc:
    """An image-contrast pair (rejected_prompt_ids set) has its own rejected prompt and images."""
    if p.rejected_prompt_ids is None:
        return Doc(i, p.prompt_ids, p.vision, ((REJECTED, p.rejected_ids),))
    vision = p.rejected_vision if p.rejected_vision is not None else p.vision
    return Doc(i, p.rejected_prompt_ids, vision, ((REJECTED, p.rejected_ids),))


def plain_docs(pairs: list[EncodedPair]) -> list[Doc]:
    """The plain layout's rows, in order: every chosen document, then every rejected one."""
    return [chosen_doc(i, p) for i, p in enumerate(pairs)] + [rejected_doc(i, p) for i, p in enumerate(pairs)]


def row_width(longest: int, pad_to_multiple_of: int | None) -> int:
    return -(-longest // pad_to_multiple_of) * pad_to_multiple_of if pad_to_multiple_of else longest


def collate(pairs: list[EncodedPair], *, pad_token_id: int, family: FamilyAdapter | str,
            pad_to_multiple_of: int | None = None) -> Batch:
    if not pairs:
        raise ValueError("collate needs at least one pair")
    adapter = adapter_for(family)
    docs = plain_docs(pairs)
    width = row_width(max(d.length for d in docs), pad_to_multiple_of)
    n = len(docs)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    completion_mask = torch.zeros((n, width), dtype=torch.long)
    for row, d in enumerate(docs):
        (_, answer), = d.parts
        end = d.length
        input_ids[row, :end] = torch.tensor(d.prompt + answer, dtype=torch.long)
        attention_mask[row, :end] = 1
        completion_mask[row, len(d.prompt):end] = 1

    model_inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    model_inputs.update(adapter.stack_vision([d.vision for d in docs]))
    if adapter.token_type_key is not None:
        model_inputs[adapter.token_type_key] = adapter.token_types(input_ids)
    return Batch(model_inputs=model_inputs, completion_mask=completion_mask, ids=[p.id for p in pairs],
                 num_pairs=len(pairs))
