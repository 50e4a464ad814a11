"""Shared by the fault tests: trainable weights of a result, and a finished small run to damage."""
from __future__ import annotations

import torch

quiet = dict(echo=lambda _m: None)


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def same_weights(a, b) -> bool:
    wa, wb = trainable(a), trainable(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
