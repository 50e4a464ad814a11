"""Sequence log-probs of the completions (plain path): forward, shift, fp32 log-softmax, sum.

Position t's logits predict token t+1, so token t+1 counts when completion_mask[t+1] is 1.
Only those positions are upcast to fp32 and normalized (a [tokens, vocab] tensor, not
[rows, length, vocab]). The fast paths live in `vlmdpo.model.fast` (`fast_batch_logps`) and are
tested equal to this; `vlmdpo.batching.layout` picks one of the two for a run.
"""
from __future__ import annotations

import torch

from vlmdpo.model.placement import model_device, to_model
from vlmdpo.types import Batch, LogpPair


def batch_logps(model, batch: Batch) -> LogpPair:
    """Policy (or reference) log-probs for a plain-layout batch; differentiable unless under no_grad."""
    inputs = to_model(batch.model_inputs, model_device(model), _float_dtype(model))
    mask = batch.completion_mask.to(inputs["input_ids"].device)
    logits = model(**inputs, use_cache=False).logits
    per_token = token_logps(logits, inputs["input_ids"], mask)
    return reduce_logps(per_token, mask[:, 1:], batch.num_pairs)


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """[rows, L-1] log p(input_ids[t+1] | ..t) in fp32 at completion positions, 0 elsewhere."""
    logits = logits[:, -input_ids.shape[1]:]  # prompt-learning adapters prepend virtual tokens
    target_mask = completion_mask[:, 1:].bool()
    picked = logits[:, :-1][target_mask].float()  # [tokens, vocab]
    targets = input_ids[:, 1:][target_mask]
    lp = torch.log_softmax(picked, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    out = torch.zeros(target_mask.shape, dtype=torch.float32, device=logits.device)
    return out.masked_scatter(target_mask, lp)


def reduce_logps(per_token: torch.Tensor, shift_mask: torch.Tensor, num_pairs: int) -> LogpPair:
    """Sum per-token log-probs into chosen / rejected rows; also the sums over the first
    min(len_c, len_r) tokens of each completion (shared length, for length-desensitized DPO)."""
    shift_mask = shift_mask.to(per_token.dtype)
    per_token = per_token * shift_mask
    sums = per_token.sum(dim=1)
    lengths = shift_mask.sum(dim=1).long()
    position = shift_mask.cumsum(dim=1)  # 1-based index of each completion token
    len_c, len_r = lengths[:num_pairs], lengths[num_pairs:]
    shared = torch.minimum(len_c, len_r).repeat(2).unsqueeze(1)
    shared_sums = (per_token * ((position > 0) & (position <= shared))).sum(dim=1)
    return LogpPair(
        chosen_logps=sums[:num_pairs], rejected_logps=sums[num_pairs:],
        chosen_lengths=len_c, rejected_lengths=len_r,
        chosen_shared_logps=shared_sums[:num_pairs], rejected_shared_logps=shared_sums[num_pairs:],
    )


def _float_dtype(model) -> torch.dtype | None:
    dtype = getattr(model, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None

