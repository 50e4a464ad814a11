"""The reference policy: the policy with adapters disabled (LoRA), or a frozen copy (full).

A run made only of reference-free losses (SimPO, ORPO, SFT) needs none: make_reference returns None.
"""
from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch

from vlmdpo.losses import needs_reference  # one list of reference-free losses (simpo, orpo, sft)
from vlmdpo.model.families import FamilyAdapter
from vlmdpo.model.prepare import disable_checkpointing, is_checkpointing
from vlmdpo.model.logps import batch_logps
from vlmdpo.types import Batch, LogpPair


@dataclass
class Reference:
    model: Any
    kind: Literal["adapters_off", "frozen_copy"]
    family: FamilyAdapter | None = None

    def logps(self, batch: Batch) -> LogpPair:
        with torch.no_grad(), self.context():
            out = batch_logps(self.model, batch, family=self.family)
        return out

    def context(self):
        """Where the reference is the model: adapters off for LoRA, nothing for a frozen copy.
        Fast paths that run their own forward use this too."""
        return self.model.disable_adapter() if self.kind == "adapters_off" else nullcontext()


def make_reference(bundle, cfg) -> Reference | None:
    if not needs_reference(getattr(cfg, "loss_type", "sigmoid")):
        return None
    if bundle.is_peft:
        return Reference(model=bundle.model, kind="adapters_off", family=bundle.family)
    frozen = copy.deepcopy(bundle.model)
    frozen.eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    if is_checkpointing(frozen):
        disable_checkpointing(frozen)  # no backward through the reference: skip the recompute
    return Reference(model=frozen, kind="frozen_copy", family=bundle.family)
