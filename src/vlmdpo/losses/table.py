"""The loss table: one `LossSpec` per `loss_type` name, the only place that knows a loss's facts.

Config validation (`requires`), `compute_loss` (`per_pair`, `needs_reference`, ...), the metric
names a run logs and the loss section of docs/CONFIG.md all read this table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from torch import Tensor

from vlmdpo.losses import functions as f

# Metrics every compute_loss call returns (TRL's names).
COMMON_METRICS: tuple[str, ...] = (
    "loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
    "logps/chosen", "logps/rejected",
)


@dataclass(frozen=True)
class PairTerms:
    """What a per-pair loss may read: fp32 [B] tensors of one batch (log-ratios only with a reference)."""

    chosen_avg: Tensor  # policy log-probs averaged over completion tokens
    rejected_avg: Tensor
    chosen_len: Tensor
    rejected_len: Tensor
    chosen_lr: Tensor | None = None  # policy minus reference log-probs (after ld_alpha)
    rejected_lr: Tensor | None = None
    nll: Tensor | None = None  # scalar chosen NLL, present when a loss or rpo_alpha uses it
    bco_delta: float | Tensor = 0.0  # bco_pair's running reward mean


@dataclass(frozen=True)
class Requirement:
    """A condition a loss puts on a config key, beyond the key's own check."""

    key: str
    rule: str  # shown in the error message and the docs
    holds: Callable[[Any], bool]
    hint: str

    def problem(self, loss: str, settings: Any) -> str | None:
        value = getattr(settings, self.key)
        if self.holds(value):
            return None
        return f"{self.key}: the {loss} loss needs it {self.rule} (got {value}); {self.hint}"


@dataclass(frozen=True)
class LossSpec:
    name: str
    summary: str
    # (terms, settings) -> [B] per-pair losses; settings has the config keys named in `params`
    per_pair: Callable[[PairTerms, Any], Tensor]
    params: tuple[str, ...]  # config keys the loss reads
    needs_reference: bool = True
    length_normalised: bool = False  # rewards from length-averaged policy log-probs (CPO/ORPO style)
    uses_nll: bool = False
    requires: tuple[Requirement, ...] = ()
    metrics: tuple[str, ...] = ()  # names `extra_metrics` returns
    extra_metrics: Callable[[PairTerms], dict[str, Tensor]] | None = None


def _spec(name: str, summary: str, per_pair, params: tuple[str, ...] = ("beta",), **kw) -> tuple[str, LossSpec]:
    return name, LossSpec(name, summary, per_pair, params, **kw)


LOSS_SPECS: dict[str, LossSpec] = dict([
    _spec("sigmoid", "DPO; label_smoothing > 0 gives conservative DPO (cDPO)",
          lambda x, p: f.sigmoid_loss(x.chosen_lr, x.rejected_lr, beta=p.beta, label_smoothing=p.label_smoothing),
          ("beta", "label_smoothing")),
    _spec("ipo", "IPO: squared loss on the length-averaged log-ratio margin",
          lambda x, p: f.ipo_loss(x.chosen_lr, x.rejected_lr, x.chosen_len, x.rejected_len, beta=p.beta)),
    _spec("hinge", "SLiC hinge loss on the reward margin",
          lambda x, p: f.hinge_loss(x.chosen_lr, x.rejected_lr, beta=p.beta)),
    _spec("robust", "Robust DPO for noisy labels; label_smoothing is the flip rate",
          lambda x, p: f.robust_loss(x.chosen_lr, x.rejected_lr, beta=p.beta, label_smoothing=p.label_smoothing),
          ("beta", "label_smoothing"),
          requires=(Requirement("label_smoothing", "in [0, 0.5)", lambda v: 0 <= v < 0.5, "try 0.1"),)),
    _spec("exo_pair", "EXO on pairs; label_smoothing is its epsilon",
          lambda x, p: f.exo_pair_loss(x.chosen_lr, x.rejected_lr, beta=p.beta, label_smoothing=p.label_smoothing),
          ("beta", "label_smoothing"),
          requires=(Requirement("label_smoothing", "> 0", lambda v: v > 0,
                                "it is EXO's epsilon; the paper uses 1e-3"),)),
    _spec("bco_pair", "BCO on pairs: each reward classified around a running mean",
          lambda x, p: f.bco_pair_loss(x.chosen_lr, x.rejected_lr, beta=p.beta, delta=x.bco_delta),
          ("beta", "bco_running_mean")),
    _spec("sppo_hard", "SPPO with hard labels: log-ratios pulled to +-1/(2 beta)",
          lambda x, p: f.sppo_hard_loss(x.chosen_lr, x.rejected_lr, beta=p.beta)),
    _spec("nca_pair", "NCA on pairs (noise-contrastive alignment)",
          lambda x, p: f.nca_pair_loss(x.chosen_lr, x.rejected_lr, beta=p.beta)),
    _spec("apo_zero", "APO-zero: raise the chosen and lower the rejected likelihood",
          lambda x, p: f.apo_zero_loss(x.chosen_lr, x.rejected_lr, beta=p.beta)),
    _spec("apo_down", "APO-down: lower both likelihoods, the rejected one more",
          lambda x, p: f.apo_down_loss(x.chosen_lr, x.rejected_lr, beta=p.beta)),
    _spec("sft", "Negative log-likelihood of the chosen answer (token mean)",
          lambda x, p: x.nll.expand(x.chosen_len.shape[0]), (), needs_reference=False, uses_nll=True),
    _spec("simpo", "SimPO: length-normalised margin with a target gap simpo_gamma",
          lambda x, p: f.simpo_loss(x.chosen_avg, x.rejected_avg, beta=p.beta, simpo_gamma=p.simpo_gamma,
                                    label_smoothing=p.label_smoothing),
          ("beta", "simpo_gamma", "label_smoothing"), needs_reference=False, length_normalised=True),
    _spec("orpo", "ORPO: chosen NLL plus beta times the odds-ratio loss",
          lambda x, p: f.orpo_loss(x.chosen_avg, x.rejected_avg, x.nll, beta=p.beta),
          needs_reference=False, length_normalised=True, uses_nll=True,
          metrics=("log_odds_ratio", "log_odds_chosen"),
          extra_metrics=lambda x: f.orpo_metrics(x.chosen_avg, x.rejected_avg)),
])
LOSS_TYPES: tuple[str, ...] = tuple(LOSS_SPECS)


def as_list(loss_type: str | Sequence[str]) -> list[str]:
    return [loss_type] if isinstance(loss_type, str) else list(loss_type)


def needs_reference(loss_type: str | Sequence[str]) -> bool:
    """Whether a run with these losses needs reference log-probs (a reference model or a cache)."""
    # an unknown name counts as needing one: the safe side until validation names the mistake
    return any(LOSS_SPECS[t].needs_reference if t in LOSS_SPECS else True for t in as_list(loss_type))


def loss_problems(settings: Any) -> list[str]:
    """The loss-specific config problems of `settings` (a TrainConfig or LossSettings), in table order."""
    chosen = set(as_list(settings.loss_type))
    return [msg for spec in LOSS_SPECS.values() if spec.name in chosen
            for req in spec.requires if (msg := req.problem(spec.name, settings))]


def metric_names(loss_type: str | Sequence[str], rpo_alpha: float | None = None) -> list[str]:
    """Every metric name compute_loss returns for these settings, sorted."""
    types = as_list(loss_type)
    specs = [LOSS_SPECS[t] for t in types]
    names = set(COMMON_METRICS)
    if len(types) > 1:
        names.update(f"loss/{t}" for t in types)
    for spec in specs:
        names.update(spec.metrics)
    if rpo_alpha or any(s.uses_nll for s in specs):
        names.add("nll_loss")
    return sorted(names)
