"""bco_pair's running reward mean (the `delta` of the BCO paper) and the batch reward that feeds it."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vlmdpo.losses.functions import ld_logps
from vlmdpo.types import LogpPair


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
