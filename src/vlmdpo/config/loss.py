"""Config keys: the preference loss. Loss-specific requirements come from the loss table."""
from __future__ import annotations

import math

from pydantic import field_validator

from vlmdpo.config.base import Keys, peer, unknown
from vlmdpo.losses import DEFAULT_BETA, LOSS_TYPES, loss_problems, needs_reference


class LossKeys(Keys):
    """Loss: which preference losses and their parameters (see "Loss types")."""

    loss_type: str | list[str] = peer("sigmoid", trl="loss_type", llamafactory="~pref_loss")
    """One loss or a list of losses to sum (see "Loss types" below)."""
    loss_weights: list[float] | None = peer(None, trl="loss_weights")
    """One weight per loss_type entry; null weighs every loss 1."""
    beta: float = peer(DEFAULT_BETA, trl="beta", llamafactory="pref_beta")
    """Scale of the implicit reward; higher keeps the model closer to the reference."""
    label_smoothing: float = peer(0.0, trl="label_smoothing", llamafactory="dpo_label_smoothing")
    """Assumed rate of flipped labels (cDPO, robust) or EXO's epsilon; in [0, 1)."""
    simpo_gamma: float = peer(0.5, trl="simpo_gamma", llamafactory="simpo_gamma")
    """SimPO's target reward margin."""
    ld_alpha: float | None = peer(None, trl="ld_alpha")
    """LD-DPO: weight in [0, 1] of the completion tokens past the shorter answer's length; null = plain DPO."""
    rpo_alpha: float | None = peer(None, trl="rpo_alpha (TRL < 1.0)", llamafactory="~pref_ftx")
    """Weight of an extra NLL loss on the chosen answer (RPO); null = none."""
    bco_running_mean: bool = True
    """bco_pair's delta: the running reward mean (BCO paper); false = 0 as in TRL 1.16."""

    @field_validator("loss_type")
    @classmethod
    def _loss_type(cls, v: str | list[str]) -> str | list[str]:
        names = [v] if isinstance(v, str) else v
        if not names:
            raise ValueError(f"is empty; use one or more of: {', '.join(LOSS_TYPES)}")
        for n in names:
            if n not in LOSS_TYPES:
                raise ValueError(unknown("loss", n, LOSS_TYPES))
        return v

    def problems(self) -> list[str]:
        types = self.loss_types
        problems: list[str] = []
        add = problems.append
        if not (self.beta > 0 and math.isfinite(self.beta)):
            add(f"beta: must be a positive number (got {self.beta}); {DEFAULT_BETA} is the usual DPO value")
        if self.loss_weights is not None:
            if len(self.loss_weights) != len(types):
                add(f"loss_weights: {len(self.loss_weights)} weights for {len(types)} loss types {types}; "
                    "give one weight per loss_type entry")
            elif any(not math.isfinite(w) or w < 0 for w in self.loss_weights):
                add(f"loss_weights: must be finite and >= 0 (got {self.loss_weights})")
        if not 0 <= self.label_smoothing < 1:
            add(f"label_smoothing: must be in [0, 1) (got {self.label_smoothing})")
        problems.extend(loss_problems(self))
        if self.ld_alpha is not None and not 0 <= self.ld_alpha <= 1:
            add(f"ld_alpha: must be in [0, 1] (got {self.ld_alpha})")
        if self.rpo_alpha is not None and self.rpo_alpha < 0:
            add(f"rpo_alpha: must be >= 0 (got {self.rpo_alpha})")
        return problems

    @property
    def loss_types(self) -> list[str]:
        return [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)

    @property
    def needs_reference(self) -> bool:
        return needs_reference(self.loss_types)
