"""Log-probs of completion tokens only, never a [batch, length, vocab] tensor.

The peers apply the LM head at every position (image tokens included) and keep the full
logits for backward. Here the hidden states that predict completion tokens are gathered first,
the head is applied in chunks of tokens, the log-softmax is taken in fp32, and each chunk is
recomputed in backward (activation checkpointing), so at most one [chunk, vocab] block lives at
a time, in forward and in backward.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlmdpo.types import LogpPair


def _chunk_logps(hidden: torch.Tensor, targets: torch.Tensor, head: Callable, softcap: float | None) -> torch.Tensor:
    logits = head(hidden)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def head_logps(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    lm_head: nn.Module | Callable,
    *,
    softcap: float | None = None,
    chunk_size: int = 1024,
    recompute: bool | None = None,
) -> torch.Tensor:
    """fp32 log p(target | hidden) for each of N tokens: hidden [N, d], targets [N] -> [N].

    `softcap` is Gemma's final_logit_softcapping (tanh(x/c)*c before the softmax).
    `recompute` (default: whenever autograd is recording) checkpoints each chunk so that its
    logits are rebuilt in backward instead of kept.
    """
    if hidden.shape[0] == 0:
        return hidden.new_zeros((0,), dtype=torch.float32)
    if recompute is None:
        recompute = torch.is_grad_enabled()
    out = []
    for h, t in zip(hidden.split(chunk_size), targets.split(chunk_size)):
        if recompute:
            out.append(checkpoint(_chunk_logps, h, t, lm_head, softcap, use_reentrant=False))
        else:
            out.append(_chunk_logps(h, t, lm_head, softcap))
    return torch.cat(out)


def full_logits_logps(
    hidden: torch.Tensor, row: torch.Tensor, pred: torch.Tensor, targets: torch.Tensor,
    lm_head: nn.Module | Callable, *, softcap: float | None = None,
) -> torch.Tensor:
    """The peers' way (logits at every position, then gather): kept to test the fast way against."""
    logits = lm_head(hidden)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    logp = torch.log_softmax(logits, dim=-1)
    return logp[row, pred, targets]


def reduce_completion_logps(
    token_logps: torch.Tensor,
    pair: torch.Tensor,
    side: torch.Tensor,
    k: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
) -> LogpPair:
    """Sum per-token log-probs into per-pair chosen/rejected sums.

    The shared sums cover the first min(len_chosen, len_rejected) tokens of each completion
    (length-desensitized DPO, `ld_alpha`).
    """
    B = int(chosen_lengths.shape[0])
    dev = token_logps.device
    pair, side, k = pair.to(dev), side.to(dev), k.to(dev)
    lc, lr = chosen_lengths.to(dev), rejected_lengths.to(dev)
    slot = pair * 2 + side
    sums = torch.zeros(2 * B, dtype=token_logps.dtype, device=dev).index_add(0, slot, token_logps)
    shared_len = torch.minimum(lc, lr)
    keep = (k < shared_len[pair]).to(token_logps.dtype)
    shared = torch.zeros(2 * B, dtype=token_logps.dtype, device=dev).index_add(0, slot, token_logps * keep)
    return LogpPair(
        chosen_logps=sums[0::2], rejected_logps=sums[1::2],
        chosen_lengths=lc, rejected_lengths=lr,
        chosen_shared_logps=shared[0::2], rejected_shared_logps=shared[1::2],
    )
