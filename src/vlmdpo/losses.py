"""DPO-family preference losses as pure functions on sequence log-probs.

Formulas follow TRL 1.16 (`trl/trainer/dpo_trainer.py`, and `trl/experimental/cpo`, `orpo` for the
reference-free SimPO and ORPO) so that numbers and metric names carry over. Every per-pair function
takes [B] tensors and returns a [B] tensor of per-pair losses; `compute_loss` combines a list of them.
Only torch is imported here: no model, no config, no state hidden in module globals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vlmdpo.types import LogpPair

LOSS_TYPES: tuple[str, ...] = (
    "sigmoid", "ipo", "hinge", "robust", "exo_pair", "bco_pair", "sppo_hard", "nca_pair",
    "apo_zero", "apo_down", "sft", "simpo", "orpo",
)
# Losses computed from the policy alone; a run made only of these needs no reference model.
REFERENCE_FREE: frozenset[str] = frozenset({"simpo", "orpo", "sft"})
# Losses that read policy log-probs averaged over completion tokens rather than summed.
LENGTH_NORMALISED: frozenset[str] = frozenset({"simpo", "orpo"})


def needs_reference(loss_type: str | Sequence[str]) -> bool:
    types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    return any(t not in REFERENCE_FREE for t in types)


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


def orpo_ratio_loss(chosen_avg: Tensor, rejected_avg: Tensor, *, beta: float) -> Tensor:
    """The odds-ratio part of ORPO per pair: -beta * logsigmoid(log_odds). Add `sft_nll` for full ORPO."""
    return -beta * F.logsigmoid(orpo_log_odds(chosen_avg, rejected_avg))


# ---------------------------------------------------------------- helpers


def ld_logps(total: Tensor, shared: Tensor | None, ld_alpha: float | None) -> Tensor:
    """LD-DPO: shared-length part counts fully, the verbose tail is weighted by ld_alpha."""
    if ld_alpha is None:
        return total
    if shared is None:
        raise ValueError("ld_alpha is set but the LogpPair has no shared-length log-probs "
                         "(batch_logps must be called with the shared sums enabled)")
    return shared + ld_alpha * (total - shared)


@dataclass
class RunningMean:
    """Running mean of the batch reward for bco_pair; the caller owns it and saves it with checkpoints."""

    mean: float = 0.0
    count: int = 0

    def update(self, values: Tensor) -> None:
        values = values.detach().float().reshape(-1)
        n = values.numel()
        if n == 0:
            return
        total = self.count + n
        self.mean = self.mean + (values.mean().item() - self.mean) * n / total
        self.count = total

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.count = float(state["mean"]), int(state["count"])


def bco_batch_reward(policy: LogpPair, ref: LogpPair, *, beta: float, ld_alpha: float | None = None) -> Tensor:
    """The scalar fed to `RunningMean.update` before computing bco_pair (mean of all rewards in the batch)."""
    c = ld_logps(policy.chosen_logps, policy.chosen_shared_logps, ld_alpha) - ld_logps(
        ref.chosen_logps, ref.chosen_shared_logps, ld_alpha)
    r = ld_logps(policy.rejected_logps, policy.rejected_shared_logps, ld_alpha) - ld_logps(
        ref.rejected_logps, ref.rejected_shared_logps, ld_alpha)
    return (beta * torch.cat([c, r])).float().mean().detach()


def _as_list(loss_type: str | Sequence[str]) -> list[str]:
    return [loss_type] if isinstance(loss_type, str) else list(loss_type)


# ---------------------------------------------------------------- the combination


def compute_loss(
    policy: LogpPair,
    ref: LogpPair | None,
    *,
    loss_type: str | Sequence[str] = "sigmoid",
    loss_weights: Sequence[float] | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    simpo_gamma: float = 0.5,
    ld_alpha: float | None = None,
    rpo_alpha: float | None = None,
    bco_delta: float | Tensor = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum over `loss_type` of the per-pair loss means, plus TRL-named metrics.

    Rewards follow TRL: beta * (policy - reference) log-ratios when reference log-probs are given;
    for a pure SimPO/ORPO run (CPOTrainer/ORPOTrainer) beta * length-averaged policy log-probs.
    `rpo_alpha` adds rpo_alpha * NLL(chosen) (RPO). Metrics are detached batch means.
    """
    types = _as_list(loss_type)
    if not types:
        raise ValueError("loss_type is empty; give at least one of: " + ", ".join(LOSS_TYPES))
    weights = [1.0] * len(types) if loss_weights is None else [float(w) for w in loss_weights]
    if len(weights) != len(types):
        raise ValueError(f"loss_weights has {len(weights)} values for {len(types)} loss types {types}")
    unknown = [t for t in types if t not in LOSS_TYPES]
    if unknown:
        raise ValueError(f"unknown loss_type {unknown}; valid: {', '.join(LOSS_TYPES)}")
    use_ref = needs_reference(types)
    if use_ref and ref is None:
        raise ValueError(f"loss_type {types} needs reference log-probs but ref is None")

    f32 = lambda t: t.float()  # noqa: E731 - log-prob arithmetic always in fp32
    c_len, r_len = f32(policy.chosen_lengths), f32(policy.rejected_lengths)
    c_avg = f32(policy.chosen_logps) / c_len.clamp(min=1.0)
    r_avg = f32(policy.rejected_logps) / r_len.clamp(min=1.0)
    # Rewards are log-ratios whenever a reference is given (TRL's DPO, sft included), except for a
    # run made only of reference-free losses, which reports CPO/ORPO-style length-averaged rewards.
    ref_rewards = ref is not None and (use_ref or not any(t in LENGTH_NORMALISED for t in types))
    if ref_rewards:
        c_logps = ld_logps(f32(policy.chosen_logps), _opt(policy.chosen_shared_logps), ld_alpha)
        r_logps = ld_logps(f32(policy.rejected_logps), _opt(policy.rejected_shared_logps), ld_alpha)
        c_lr = c_logps - ld_logps(f32(ref.chosen_logps), _opt(ref.chosen_shared_logps), ld_alpha)
        r_lr = r_logps - ld_logps(f32(ref.rejected_logps), _opt(ref.rejected_shared_logps), ld_alpha)

    nll = None
    total: Tensor | float = 0.0
    metrics: dict[str, Tensor] = {}
    for name, weight in zip(types, weights):
        if name in ("sft", "orpo") or rpo_alpha:
            nll = sft_nll(f32(policy.chosen_logps), c_len) if nll is None else nll
        if name == "sigmoid":
            per = sigmoid_loss(c_lr, r_lr, beta=beta, label_smoothing=label_smoothing)
        elif name == "hinge":
            per = hinge_loss(c_lr, r_lr, beta=beta)
        elif name == "ipo":
            per = ipo_loss(c_lr, r_lr, c_len, r_len, beta=beta)
        elif name == "robust":
            per = robust_loss(c_lr, r_lr, beta=beta, label_smoothing=label_smoothing)
        elif name == "exo_pair":
            per = exo_pair_loss(c_lr, r_lr, beta=beta, label_smoothing=label_smoothing)
        elif name == "bco_pair":
            per = bco_pair_loss(c_lr, r_lr, beta=beta, delta=bco_delta)
        elif name == "sppo_hard":
            per = sppo_hard_loss(c_lr, r_lr, beta=beta)
        elif name == "nca_pair":
            per = nca_pair_loss(c_lr, r_lr, beta=beta)
        elif name == "apo_zero":
            per = apo_zero_loss(c_lr, r_lr, beta=beta)
        elif name == "apo_down":
            per = apo_down_loss(c_lr, r_lr, beta=beta)
        elif name == "sft":
            per = nll.expand(c_len.shape[0])
        elif name == "simpo":
            per = simpo_loss(c_avg, r_avg, beta=beta, simpo_gamma=simpo_gamma, label_smoothing=label_smoothing)
        else:  # orpo
            log_odds = orpo_log_odds(c_avg, r_avg)
            per = nll - beta * F.logsigmoid(log_odds)
            metrics["log_odds_ratio"] = F.logsigmoid(log_odds).mean().detach()
            metrics["log_odds_chosen"] = log_odds.mean().detach()
        term = per.mean()
        if len(types) > 1:
            metrics[f"loss/{name}"] = term.detach()
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
