"""Every DPO-family loss as a pure function of [B] log-prob tensors, returning [B] per-pair losses.

Formulas follow TRL 1.16 (`trl/trainer/dpo_trainer.py`, and `trl/experimental/cpo`, `orpo` for the
reference-free SimPO and ORPO) so that numbers carry over.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# ---------------------------------------------------------------- reference-based, per pair
# chosen_lr / rejected_lr are policy minus reference log-probs ("log-ratios").


def sigmoid_loss(chosen_lr: Tensor, rejected_lr: Tensor, *, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """DPO; with label_smoothing > 0 the conservative cDPO form (reduces to TRL's sigmoid at 0)."""
    logits = beta * (chosen_lr - rejected_lr)
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def hinge_loss(chosen_lr: Tensor, rejected_lr: Tensor, *, beta: float) -> Tensor:
    return torch.relu(1 - beta * (chosen_lr - rejected_lr))


def ipo_loss(chosen_lr: Tensor, rejected_lr: Tensor, chosen_len: Tensor, rejected_len: Tensor, *,
             beta: float) -> Tensor:
    # TRL divides each log-ratio by its completion length (confirmed with the IPO authors).
    delta = chosen_lr / chosen_len.clamp(min=1.0) - rejected_lr / rejected_len.clamp(min=1.0)
    return (delta - 1 / (2 * beta)) ** 2


def robust_loss(chosen_lr: Tensor, rejected_lr: Tensor, *, beta: float, label_smoothing: float) -> Tensor:
    logits = beta * (chosen_lr - rejected_lr)
    clean = -(1 - label_smoothing) * F.logsigmoid(logits)
    flipped = -label_smoothing * F.logsigmoid(-logits)
    return (clean - flipped) / (1 - 2 * label_smoothing)


def exo_pair_loss(chosen_lr: Tensor, rejected_lr: Tensor, *, beta: float, label_smoothing: float) -> Tensor:
    """EXO-pref (K=2): KL(softmax(beta*logratios) || [1-eps, eps]); needs eps = label_smoothing > 0."""
    logits = beta * (chosen_lr - rejected_lr)
    eps = torch.tensor(label_smoothing, dtype=logits.dtype, device=logits.device)
    qw, ql = torch.sigmoid(logits), torch.sigmoid(-logits)
    return qw * (F.logsigmoid(logits) - torch.log1p(-eps)) + ql * (F.logsigmoid(-logits) - torch.log(eps))


def bco_pair_loss(chosen_lr: Tensor, rejected_lr: Tensor, *, beta: float, delta: float | Tensor = 0.0) -> Tensor:
    """BCO on pairs. `delta` is the running reward mean (see `RunningMean`); TRL 1.16 uses delta = 0."""
    return -F.logsigmoid(beta * chosen_lr - delta) - F.logsigmoid(-(beta * rejected_lr - delta))


def sppo_hard_loss(chosen_lr: Tensor, rejected_lr: Tensor, *, beta: float) -> Tensor:
    return (chosen_lr - 0.5 / beta) ** 2 + (rejected_lr + 0.5 / beta) ** 2


def nca_pair_loss(chosen_lr: Tensor, rejected_lr: Tensor, *, beta: float) -> Tensor:
    c, r = beta * chosen_lr, beta * rejected_lr
    return -F.logsigmoid(c) - 0.5 * F.logsigmoid(-c) - 0.5 * F.logsigmoid(-r)


def apo_zero_loss(chosen_lr: Tensor, rejected_lr: Tensor, *, beta: float) -> Tensor:
    return (1 - torch.sigmoid(beta * chosen_lr)) + torch.sigmoid(beta * rejected_lr)


def apo_down_loss(chosen_lr: Tensor, rejected_lr: Tensor, *, beta: float) -> Tensor:
    return torch.sigmoid(beta * chosen_lr) + (1 - torch.sigmoid(beta * (chosen_lr - rejected_lr)))


# ---------------------------------------------------------------- policy-only


def sft_nll(chosen_logps: Tensor, chosen_len: Tensor) -> Tensor:
    """Scalar NLL per chosen completion token over the whole batch (TRL's token-level mean)."""
    return -chosen_logps.sum() / chosen_len.sum().clamp(min=1.0)


def simpo_loss(chosen_avg: Tensor, rejected_avg: Tensor, *, beta: float, simpo_gamma: float,
               label_smoothing: float = 0.0) -> Tensor:
    """SimPO on length-normalised log-probs: -logsigmoid(beta*(c - r) - gamma) (TRL CPOTrainer form)."""
    logits = (chosen_avg - rejected_avg) - simpo_gamma / beta
    return -(1 - label_smoothing) * F.logsigmoid(beta * logits) - label_smoothing * F.logsigmoid(-beta * logits)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, branching at -ln 2 to avoid cancellation."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_log_odds(chosen_avg: Tensor, rejected_avg: Tensor) -> Tensor:
    # An average log-prob of exactly 0 (a saturated model) would make the odds infinite; the clamp
    # keeps training finite and never touches realistic values.
    c = chosen_avg.clamp(max=-1e-6)
    r = rejected_avg.clamp(max=-1e-6)
    return (c - r) - (log1mexp(c) - log1mexp(r))


def orpo_loss(chosen_avg: Tensor, rejected_avg: Tensor, nll: Tensor, *, beta: float) -> Tensor:
    """ORPO: the chosen NLL (scalar, see `sft_nll`) minus beta * logsigmoid(log odds ratio), per pair."""
    return nll - beta * F.logsigmoid(orpo_log_odds(chosen_avg, rejected_avg))


def orpo_metrics(chosen_avg: Tensor, rejected_avg: Tensor) -> dict[str, Tensor]:
    """ORPOTrainer's extra metrics (detached batch means)."""
    log_odds = orpo_log_odds(chosen_avg, rejected_avg)
    return {"log_odds_ratio": F.logsigmoid(log_odds).mean().detach(), "log_odds_chosen": log_odds.mean().detach()}


# ---------------------------------------------------------------- log-prob transform


def ld_logps(total: Tensor, shared: Tensor | None, ld_alpha: float | None) -> Tensor:
    """LD-DPO: shared-length part counts fully, the verbose tail is weighted by ld_alpha."""
    if ld_alpha is None:
        return total
    if shared is None:
        raise ValueError("ld_alpha is set but the LogpPair has no shared-length log-probs "
                         "(batch_logps must be called with the shared sums enabled)")
    return shared + ld_alpha * (total - shared)
