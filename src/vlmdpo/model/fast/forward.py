"""`fast_batch_logps`: sequence log-probs of a `SharedBatch`, equal to the plain path's.

The model runs through its own top-level forward (so DDP / FSDP2 / PEFT wrappers see a normal
call) with our attention mask, position ids and vision features (encoded once, from a pre-hook
inside that call). A pre-hook on the LM head applies the head to completion positions only, in
chunks (`logits.head_logps`), and hands the head an empty slice, so the full-vocabulary logits
are never built. Every parameter is used inside the model's call, where FSDP2 has gathered it.
What a family's own forward does that this must redo (mRoPE, bidirectional image attention,
logit soft-capping) is read from its `FamilyAdapter`.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from typing import Any

import torch

from vlmdpo.model.families import FamilyAdapter, adapter_for
from vlmdpo.model.fast.logits import head_logps, reduce_completion_logps
from vlmdpo.model.fast.masks import SHARED_PREFIX_IMPLEMENTATIONS, build_attention_mask, image_blocks
from vlmdpo.model.fast.positions import position_ids
from vlmdpo.model.fast.vision import (
    batch_vision_features, can_share_vision, encode_in_forward, forward_vision_kwargs, inner_model, tower_replay,
    unwrap,
)
from vlmdpo.model.placement import model_device
from vlmdpo.types import FastOptions, LogpPair, SharedBatch


def attn_implementation(model: Any) -> str:
    cfg = unwrap(model).config
    return getattr(cfg, "_attn_implementation", None) or "eager"


def resolve_options(options: FastOptions, model: Any) -> FastOptions:
    """Turn off what the model's attention kernel cannot do (shared prefix needs a custom mask)."""
    if attn_implementation(model) not in SHARED_PREFIX_IMPLEMENTATIONS:
        return replace(options, shared_prefix=False, padding_free=False)
    return options


def _embedding_dtype(model: Any) -> torch.dtype:
    base = unwrap(model)
    emb = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    if emb is not None and hasattr(emb, "weight"):
        return emb.weight.dtype
    return next(base.parameters()).dtype


class _CompletionHead:
    """Forward pre-hook on the LM head: apply the head to the completion positions of its input
    (`logits.head_logps`, chunked), keep those log-probs, and hand the head an empty slice.

    Done inside the head's own call, with `module.forward` (no hooks again), because that is where
    FSDP2 has gathered the head's unit and registered its gradient reduction on the head's input:
    further calls of the head after the model's forward would each reduce and free the unit again
    in backward, while the chunks recomputed in backward still need it (a crash on CPU).
    """

    def __init__(self, idx: Any, softcap: float | None, chunk_size: int) -> None:
        self.idx, self.softcap, self.chunk_size = idx, softcap, chunk_size
        self.token_logps: torch.Tensor | None = None

    def __call__(self, module, args):
        hidden = args[0][self.idx.row, self.idx.pred]
        self.token_logps = head_logps(hidden, self.idx.target, module.forward, softcap=self.softcap,
                                      chunk_size=self.chunk_size)
        return (args[0][:, :0],)


def build_mask(model: Any, batch: SharedBatch, device: torch.device, family: FamilyAdapter) -> Any:
    base = unwrap(model)
    attn = attn_implementation(model)
    doc, branch, pos = batch.doc.to(device), batch.branch.to(device), batch.positions.to(device)
    if attn not in SHARED_PREFIX_IMPLEMENTATIONS:
        if batch.layout != "plain":
            raise ValueError(
                f"attn_implementation {attn!r} takes no custom attention mask: use shared_prefix: false and "
                f"padding_free: false, or attn_implementation sdpa / eager / flex_attention"
            )
        return (doc >= 0).long()
    blocks = None
    if family.bidirectional_images:
        blocks = image_blocks(batch.input_ids.to(device), doc, family.image_token_id(base.config))
    return build_attention_mask(doc, branch, pos, config=base.config, attn_implementation=attn,
                                dtype=_embedding_dtype(model), blocks=blocks)


def fast_batch_logps(
    model: Any,
    batch: SharedBatch,
    *,
    family: FamilyAdapter | str | None = None,
    options: FastOptions | None = None,
    vision_features: dict[str, Any] | None = None,
) -> LogpPair:
    """Summed completion log-probs (fp32) of `batch`, equal to what
    `vlmdpo.model.logps.batch_logps` gives for the plain layout of the same pairs.

    `options` default to the ones the batch was collated with. With `share_vision`, the vision
    encoder runs once per image: when the model's vision path is frozen and adapter-free its
    outputs are computed without grad and kept on the batch, so the reference and the policy
    (whichever runs first) share them; otherwise a plain-layout batch still encodes each pair's
    images once and uses the features for both of its rows; and a frozen vision tower under a
    trainable projector runs once per batch across both models (`vision.tower_replay`).
    `vision_features` overrides all that. `family` (a FamilyAdapter; looked up from the model when
    None) says where the vision tower is and which of the forward's quirks to redo.
    """
    options = options or batch.options
    base = unwrap(model)
    family = adapter_for(family if family is not None else base)
    inner = inner_model(model)
    device = model_device(model)
    dtype = _embedding_dtype(model)
    share = options.share_vision and batch.vision and vision_features is None
    # Parameters are used only inside the model's own call, where FSDP's hooks have gathered them:
    # the vision encoder runs from a pre-hook on the model (`encode_in_forward`), the LM head on
    # completion positions from a pre-hook on the head (`_CompletionHead`).
    with ExitStack() as scope:
        if share:
            scope.enter_context(tower_replay(model, batch, family))
            scope.enter_context(encode_in_forward(model, partial(_shared_or_once, model, batch, device, dtype)))
        kwargs = forward_vision_kwargs(batch, vision_features, device, dtype)
        kwargs["attention_mask"] = build_mask(model, batch, device, family)
        kwargs["position_ids"] = position_ids(inner, batch, device, family)
        ids = batch.input_ids.to(device)
        idx = batch.completion.to(device)
        if options.completion_only_logits:
            head = base.get_output_embeddings()
            take = _CompletionHead(idx, family.logit_softcap(base.config), options.logits_chunk_size)
            handle = head.register_forward_pre_hook(take)
            try:
                model(input_ids=ids, use_cache=False, **kwargs)
            finally:
                handle.remove()
        else:
            logits = model(input_ids=ids, use_cache=False, **kwargs).logits

    if options.completion_only_logits:
        token_logps = take.token_logps
    else:
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        token_logps = torch.log_softmax(logits, dim=-1)[idx.row, idx.pred, idx.target]
    return reduce_completion_logps(token_logps, idx.pair, idx.side, idx.k, batch.chosen_lengths, batch.rejected_lengths)


def _shared_or_once(model: Any, batch: SharedBatch, device: torch.device, dtype: torch.dtype) -> dict[str, Any] | None:
    if can_share_vision(model):
        if batch.vision_cache is None:
            with torch.no_grad():
                batch.vision_cache = batch_vision_features(model, batch, device, dtype)
        return batch.vision_cache
    if batch.vision_repeats:
        return batch_vision_features(model, batch, device, dtype)  # with grad: the tower or projector trains
    return None  # each image is in the input once already: the forward encodes it once

