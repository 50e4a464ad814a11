"""Step arithmetic, data order, optimizer and learning-rate schedule.

Data order is a pure function of (seed, epoch): resuming recomputes it and skips the batches
already consumed, so no sampler state has to be saved.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class StepPlan:
    batches_per_epoch: int  # micro-batches per process per epoch
    steps_per_epoch: int  # optimizer steps per epoch
    total_steps: int
    warmup_steps: int
    num_epochs: int  # epochs started (the last may be partial)


def plan_steps(n_pairs: int, *, batch_size: int, world_size: int, grad_accum: int, num_train_epochs: float,
               max_steps: int, warmup_steps: int, warmup_ratio: float) -> StepPlan:
    if n_pairs < 1:
        raise ValueError("no training pairs left to train on")
    batches = math.ceil(n_pairs / (batch_size * world_size))
    per_epoch = math.ceil(batches / grad_accum)
    total = max_steps if max_steps > 0 else max(1, math.ceil(num_train_epochs * per_epoch))
    warmup = warmup_steps if warmup_steps > 0 else math.ceil(warmup_ratio * total)
    return StepPlan(batches, per_epoch, total, min(warmup, total), math.ceil(total / per_epoch))


def epoch_batches(n_pairs: int, *, epoch: int, seed: int, batch_size: int, world_size: int = 1,
                  rank: int = 0, shuffle: bool = True) -> list[list[int]]:
    """This process's micro-batches (lists of pair indices) for one epoch.

    Global batch g holds `batch_size * world_size` consecutive indices of a seeded permutation;
    rank r takes its r-th slice, so N processes see the same pairs per step as one process with
    an N-times larger batch. With several processes the last global batch wraps around to the
    start (as DistributedSampler does) so every rank runs the same number of steps.
    """
    if shuffle:
        order = torch.randperm(n_pairs, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    else:
        order = list(range(n_pairs))
    glob = batch_size * world_size
    n_glob = math.ceil(n_pairs / glob)
    if world_size > 1 and n_pairs % glob:
        order = order + (order * glob)[: n_glob * glob - n_pairs]
    out = []
    for g in range(n_glob):
        chunk = order[g * glob:(g + 1) * glob]
        mine = chunk[rank * batch_size:(rank + 1) * batch_size]
        if mine:
            out.append(mine)
    return out


def shard(indices: list[int], *, world_size: int, rank: int) -> list[int]:
    """Strided share of work (evaluation, precompute) for one process; results are gathered after."""
    return indices[rank::world_size]


def build_optimizer(model: torch.nn.Module, *, learning_rate: float, weight_decay: float,
                    part_lrs: dict[str, float] | None = None,
                    part_of: Callable[[str], str] | None = None) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; biases and norm weights (1-D tensors) get no weight decay.

    A part with its own learning rate (`part_lrs`, by `part_of(parameter name)`: vision_tower, projector) gets
    its own two groups after the main two, so a run without part rates has the same groups as always (and
    its checkpoints load into this optimizer)."""
    part_lrs = part_lrs or {}
    if part_lrs and part_of is None:
        raise ValueError("part_lrs needs part_of: the function that names a parameter's part")
    buckets: dict[tuple[str | None, bool], list[torch.nn.Parameter]] = {
        (part, decay): [] for part in (None, *part_lrs) for decay in (True, False)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            part = part_of(name) if part_lrs else None
            buckets[(part if part in part_lrs else None, p.ndim >= 2)].append(p)
    if not any(buckets.values()):
        raise ValueError("the model has no trainable parameters; check finetuning_type and the freeze_* options")
    groups = [{"params": params, "weight_decay": weight_decay if decay else 0.0,
               "lr": learning_rate if part is None else part_lrs[part]}
              for (part, decay), params in buckets.items() if params]
    return torch.optim.AdamW(groups, lr=learning_rate)


def build_scheduler(optimizer: torch.optim.Optimizer, *, name: str, plan: StepPlan):
    from transformers import get_scheduler

    return get_scheduler(name, optimizer, num_warmup_steps=plan.warmup_steps, num_training_steps=plan.total_steps)
