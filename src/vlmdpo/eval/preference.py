"""Held-out preference metrics: implicit reward accuracy and margins, model vs reference.

The implicit DPO reward of an answer is beta * (log pi(y|x) - log pi_ref(y|x)). Reward accuracy
is the share of pairs whose chosen reward beats the rejected one. A tie counts as half a win:
the base model measured against itself has all rewards equal to zero, and 50% (a coin flip)
says that honestly where TRL's strict ">" would print 0%. The model's own preference (log-prob
of chosen above rejected, no reference) is reported beside it, because it is meaningful for
the base model too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from vlmdpo.types import Dropped, EncodedPair, LogpPair, PreferenceRecord


def _win_rate(diff: torch.Tensor) -> float:
    if diff.numel() == 0:
        return float("nan")
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean().item()


def _mean(t: torch.Tensor) -> float:
    return t.double().mean().item() if t.numel() else float("nan")


def preference_metrics(policy: LogpPair, reference: LogpPair, *, beta: float,
                       groups: Sequence[str] | None = None) -> dict[str, Any]:
    """Pure metric math on per-pair log-probs ([N] tensors).

    Returns reward_accuracy, reward_margin (mean of beta*(dc - dr)), rewards_chosen/rejected
    (means), logp_accuracy and logp_margin (policy's own chosen-minus-rejected log-prob), n;
    and, when `groups` labels each pair (e.g. question kind), the same per group under "by_group".
    """
    pc, pr = policy.chosen_logps.detach().double().cpu(), policy.rejected_logps.detach().double().cpu()
    rc_, rr_ = reference.chosen_logps.detach().double().cpu(), reference.rejected_logps.detach().double().cpu()
    if not (pc.shape == pr.shape == rc_.shape == rr_.shape):
        raise ValueError(f"policy and reference log-probs differ in shape: {tuple(pc.shape)} vs {tuple(rc_.shape)}")
    rc, rr = beta * (pc - rc_), beta * (pr - rr_)

    def summary(ix: torch.Tensor | slice) -> dict[str, float]:
        return {
            "n": int(pc[ix].numel()),
            "reward_accuracy": _win_rate(rc[ix] - rr[ix]),
            "reward_margin": _mean(rc[ix] - rr[ix]),
            "rewards_chosen": _mean(rc[ix]),
            "rewards_rejected": _mean(rr[ix]),
            "logp_accuracy": _win_rate(pc[ix] - pr[ix]),
            "logp_margin": _mean(pc[ix] - pr[ix]),
        }

    out: dict[str, Any] = summary(slice(None))
    if groups is not None:
        if len(groups) != pc.numel():
            raise ValueError(f"{len(groups)} group labels for {pc.numel()} pairs")
        out["by_group"] = {
            g: summary(torch.tensor([i for i, x in enumerate(groups) if x == g], dtype=torch.long))
            for g in sorted(set(groups))
        }
    return out


def encode_records(records: Sequence[PreferenceRecord], encode: Callable[[PreferenceRecord], EncodedPair]
                   ) -> tuple[list[EncodedPair], list[int], list[Dropped]]:
    """Encode each record; a pair that cannot be encoded is reported, never silently lost.

    Returns (pairs, indices of the records they came from, dropped).
    """
    from vlmdpo.encode import EncodeError, dropped_pair

    pairs, kept, dropped = [], [], []
    for i, rec in enumerate(records):
        try:
            pairs.append(encode(rec))
            kept.append(i)
        except EncodeError as exc:
            dropped.append(dropped_pair(rec, exc))
    return pairs, kept, dropped


def pair_logps(model, pairs: Sequence[EncodedPair], *, family: Any, pad_token_id: int, batch_size: int = 8,
               on_batch: Callable[[int], None] | None = None) -> LogpPair:
    """Summed completion log-probs for every pair, in order, without gradients."""
    from vlmdpo.batching.plain import collate
    from vlmdpo.model.logps import batch_logps

    if not pairs:
        raise ValueError("no pairs to score: every held-out pair was dropped or the split is empty")
    parts: list[LogpPair] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(pairs), batch_size):
                chunk = list(pairs[start:start + batch_size])
                batch = collate(chunk, pad_token_id=pad_token_id, family=family)
                lp = batch_logps(model, batch)
                parts.append(LogpPair(*(t.detach().float().cpu() for t in (
                    lp.chosen_logps, lp.rejected_logps, lp.chosen_lengths, lp.rejected_lengths))))
                if on_batch is not None:
                    on_batch(len(chunk))
    finally:
        model.train(was_training)
    return LogpPair(
        chosen_logps=torch.cat([p.chosen_logps for p in parts]),
        rejected_logps=torch.cat([p.rejected_logps for p in parts]),
        chosen_lengths=torch.cat([p.chosen_lengths for p in parts]),
        rejected_lengths=torch.cat([p.rejected_lengths for p in parts]),
    )


@dataclass
class HeldOutScores:
    """Per-pair log-probs of one model on the held-out pairs, with the pairs' ids and groups."""

    ids: list[str]
    groups: list[str] | None
    logps: LogpPair
    extra: dict[str, Any] = field(default_factory=dict)
