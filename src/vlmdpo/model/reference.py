"""The reference policy: the policy with adapters disabled (LoRA), or a frozen copy (full).

Whether a run needs a reference at all (reference-free losses such as SimPO, ORPO and SFT need
none) is the caller's decision; the reference computes its log-probs with the run's `logps_fn`,
the same one as the policy (`vlmdpo.batching.layout.select_layout`).
"""
from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch

from vlmdpo.model.prepare import disable_checkpointing, is_checkpointing
from vlmdpo.types import LogpPair


@dataclass
class Reference:
    model: Any
    kind: Literal["adapters_off", "frozen_copy"]
    logps_fn: Callable[[Any, Any], LogpPair]  # (model, batch) -> LogpPair

    def logps(self, batch: Any) -> LogpPair:
        with torch.no_grad(), self.context():
            return self.logps_fn(self.model, batch)

    def context(self):
        """Where the reference is the model: adapters off for LoRA, nothing for a frozen copy."""
        return self.model.disable_adapter() if self.kind == "adapters_off" else nullcontext()


def make_reference(policy: Any, *, is_peft: bool, logps_fn: Callable[[Any, Any], LogpPair]) -> Reference:
    """LoRA / QLoRA (`is_peft`): the policy itself with its adapters off. Full fine-tuning: a frozen,
    eval-mode copy of the policy as it is now, without gradient checkpointing."""
    if is_peft:
        return Reference(model=policy, kind="adapters_off", logps_fn=logps_fn)
    frozen = copy.deepcopy(policy)
    frozen.eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    if is_checkpointing(frozen):
        disable_checkpointing(frozen)  # no backward through the reference: skip the recompute
    return Reference(model=frozen, kind="frozen_copy", logps_fn=logps_fn)
