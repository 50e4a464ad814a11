"""`compute_loss`: the weighted sum of the chosen losses (looked up in the loss table) and TRL's metrics."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

import torch
from torch import Tensor

from vlmdpo.losses.functions import ld_logps, sft_nll
from vlmdpo.losses.settings import DEFAULT_BETA
from vlmdpo.losses.table import LOSS_SPECS, LOSS_TYPES, PairTerms, as_list, needs_reference
from vlmdpo.types import LogpPair


def compute_loss(
    policy: LogpPair,
    ref: LogpPair | None,
    *,
    loss_type: str | Sequence[str] = "sigmoid",
    loss_weights: Sequence[float] | None = None,
    beta: float = DEFAULT_BETA,
    label_smoothing: float = 0.0,
    simpo_gamma: float = 0.5,
    ld_alpha: float | None = None,
    rpo_alpha: float | None = None,
    bco_delta: float | Tensor = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum over `loss_type` of the per-pair loss means, plus TRL-named metrics.

    Rewards follow TRL: beta * (policy - reference) log-ratios when reference log-probs are given;
    for a pure SimPO/ORPO run (CPOTrainer/ORPOTrainer) beta * length-averaged policy log-probs.
    `rpo_alpha` adds rpo_alpha * NLL(chosen) (RPO). Metrics are detached batch means; their names
    are `metric_names(loss_type, rpo_alpha)`.
    """
    types = as_list(loss_type)
    if not types:
        raise ValueError("loss_type is empty; give at least one of: " + ", ".join(LOSS_TYPES))
    weights = [1.0] * len(types) if loss_weights is None else [float(w) for w in loss_weights]
    if len(weights) != len(types):
        raise ValueError(f"loss_weights has {len(weights)} values for {len(types)} loss types {types}")
    unknown = [t for t in types if t not in LOSS_SPECS]
    if unknown:
        raise ValueError(f"unknown loss_type {unknown}; valid: {', '.join(LOSS_TYPES)}")
    specs = [LOSS_SPECS[t] for t in types]
    use_ref = needs_reference(types)
    if use_ref and ref is None:
        raise ValueError(f"loss_type {types} needs reference log-probs but ref is None")

    f32 = lambda t: t.float()  # noqa: E731 - log-prob arithmetic always in fp32
    c_len, r_len = f32(policy.chosen_lengths), f32(policy.rejected_lengths)
    c_avg = f32(policy.chosen_logps) / c_len.clamp(min=1.0)
    r_avg = f32(policy.rejected_logps) / r_len.clamp(min=1.0)
    # Rewards are log-ratios whenever a reference is given (TRL's DPO, sft included), except for a
    # run made only of reference-free losses, which reports CPO/ORPO-style length-averaged rewards.
    ref_rewards = ref is not None and (use_ref or not any(s.length_normalised for s in specs))
    c_lr = r_lr = None
    if ref_rewards:
        c_logps = ld_logps(f32(policy.chosen_logps), _opt(policy.chosen_shared_logps), ld_alpha)
        r_logps = ld_logps(f32(policy.rejected_logps), _opt(policy.rejected_shared_logps), ld_alpha)
        c_lr = c_logps - ld_logps(f32(ref.chosen_logps), _opt(ref.chosen_shared_logps), ld_alpha)
        r_lr = r_logps - ld_logps(f32(ref.rejected_logps), _opt(ref.rejected_shared_logps), ld_alpha)
    nll = sft_nll(f32(policy.chosen_logps), c_len) if rpo_alpha or any(s.uses_nll for s in specs) else None
    terms = PairTerms(c_avg, r_avg, c_len, r_len, c_lr, r_lr, nll, bco_delta)
    params = SimpleNamespace(beta=beta, label_smoothing=label_smoothing, simpo_gamma=simpo_gamma)

    total: Tensor | float = 0.0
    metrics: dict[str, Tensor] = {}
    for spec, weight in zip(specs, weights):
        term = spec.per_pair(terms, params).mean()
        if spec.extra_metrics is not None:
            metrics.update(spec.extra_metrics(terms))
        if len(types) > 1:
            metrics[f"loss/{spec.name}"] = term.detach()
        total = total + weight * term
    if rpo_alpha:
        total = total + rpo_alpha * nll
    if nll is not None:
        metrics["nll_loss"] = nll.detach()

    if ref_rewards:
        c_rew, r_rew = beta * c_lr.detach(), beta * r_lr.detach()
        c_shown, r_shown = c_logps.detach(), r_logps.detach()
    else:
        c_rew, r_rew = beta * c_avg.detach(), beta * r_avg.detach()
        c_shown, r_shown = c_avg.detach(), r_avg.detach()
    loss = total if isinstance(total, Tensor) else torch.tensor(total)
    metrics.update({
        "loss": loss.detach(),
        "rewards/chosen": c_rew.mean(),
        "rewards/rejected": r_rew.mean(),
        "rewards/accuracies": (c_rew > r_rew).float().mean(),
        "rewards/margins": (c_rew - r_rew).mean(),
        "logps/chosen": c_shown.mean(),
        "logps/rejected": r_shown.mean(),
    })
    return loss, metrics


def _opt(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.float()
