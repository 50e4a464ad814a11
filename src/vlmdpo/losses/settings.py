"""The loss settings of a run: what `compute_loss` needs beyond the log-probs, and what it will log."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlmdpo.losses.table import metric_names

# The one default for beta (config, compute_loss and `vlmdpo compare` all read it from here).
DEFAULT_BETA = 0.1


@dataclass
class LossSettings:
    loss_type: list[str]
    loss_weights: list[float] | None
    beta: float
    label_smoothing: float
    simpo_gamma: float
    ld_alpha: float | None
    rpo_alpha: float | None
    bco_running_mean: bool

    @classmethod
    def from_config(cls, cfg) -> "LossSettings":
        return cls(cfg.loss_types, cfg.loss_weights, cfg.beta, cfg.label_smoothing, cfg.simpo_gamma,
                   cfg.ld_alpha, cfg.rpo_alpha, cfg.bco_running_mean)

    def kwargs(self) -> dict[str, Any]:
        return dict(loss_type=self.loss_type, loss_weights=self.loss_weights, beta=self.beta,
                    label_smoothing=self.label_smoothing, simpo_gamma=self.simpo_gamma,
                    ld_alpha=self.ld_alpha, rpo_alpha=self.rpo_alpha)

    def metric_keys(self) -> list[str]:
        """Every metric name compute_loss returns for these settings (fixed keys for cross-process reduce)."""
        return metric_names(self.loss_type, self.rpo_alpha)
