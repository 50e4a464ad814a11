"""One optimizer step and one evaluation pass; the loop (loop.py) only orchestrates them."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Sequence

import torch

from vlmdpo.losses import LossSettings, RunningMean, bco_batch_reward, compute_loss
from vlmdpo.train.data import StepBatch, to_device
from vlmdpo.train.metrics import WeightedMean, reduce_across_processes
from vlmdpo.train.refcache import RefCache
from vlmdpo.types import LogpPair


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. the loss became NaN); the message says where and what to try."""


class RefSource:
    """Reference log-probs for a batch: from the precomputed cache, else from the reference model."""

    def __init__(self, reference: Any = None, cache: RefCache | None = None):
        self.reference = reference
        self.cache = cache

    def __call__(self, step: StepBatch, device: torch.device) -> LogpPair | None:
        if self.cache is not None:
            return self.cache.lookup(step.indices, device)
        if self.reference is None:
            return None
        with torch.no_grad():
            return self.reference.logps(step.batch)


def _loss_and_metrics(policy: LogpPair, ref: LogpPair | None, losses: LossSettings, bco: RunningMean,
                      accelerator, update_bco: bool):
    delta = 0.0
    if losses.bco_running_mean and "bco_pair" in losses.loss_type and ref is not None:
        if update_bco:
            reward = bco_batch_reward(policy, ref, beta=losses.beta, ld_alpha=losses.ld_alpha)
            bco.update(accelerator.gather(reward.reshape(1)) if accelerator.num_processes > 1 else reward)
        delta = bco.mean
    return compute_loss(policy, ref, bco_delta=delta, **losses.kwargs())


def train_step(micro: Sequence[StepBatch], *, model, logps_fn: Callable, ref_source: RefSource,
               losses: LossSettings, bco: RunningMean, accelerator, optimizer, scheduler,
               max_grad_norm: float | None, metric_keys: list[str], step_no: int) -> dict[str, float]:
    """Forward/backward over the micro-batches of one optimizer step, then clip and step.

    Raises TrainingError before the optimizer step when the loss or gradient norm is not finite,
    so the weights (and the last checkpoint) stay good.
    """
    device = accelerator.device
    agg = WeightedMean()
    bad, bad_value = 0.0, float("nan")  # bad_value stays nan when another process saw the bad loss
    pairs = tokens = 0
    for j, sb in enumerate(micro):
        sb = to_device(sb, device)
        last = j == len(micro) - 1
        sync = contextlib.nullcontext() if last or accelerator.num_processes == 1 else accelerator.no_sync(model)
        with sync:
            policy = logps_fn(model, sb.batch)
            ref = ref_source(sb, device)
            loss, m = _loss_and_metrics(policy, ref, losses, bco, accelerator, update_bco=True)
            if not torch.isfinite(loss):
                bad += 1
                bad_value = loss.item()
            accelerator.backward(loss / len(micro))
        agg.add({k: v.item() for k, v in m.items()}, sb.batch.num_pairs)
        pairs += sb.batch.num_pairs
        tokens += sb.num_tokens
    flags = torch.tensor([bad, pairs, tokens], dtype=torch.float64, device=device)
    if accelerator.num_processes > 1:
        flags = accelerator.reduce(flags, reduction="sum")
    lr = scheduler.get_last_lr()[0]
    if flags[0].item() > 0:
        raise TrainingError(_diverged(f"the loss became {bad_value}", step_no))
    norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm if max_grad_norm else float("inf"))
    grad_norm = float(norm) if norm is not None else float("nan")
    if not math.isfinite(grad_norm) and accelerator.scaler is None:  # fp16's scaler skips such steps itself
        raise TrainingError(_diverged(f"the gradient norm became {grad_norm}", step_no))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    means = {k: agg.result().get(k, 0.0) for k in metric_keys}
    out = reduce_across_processes(accelerator, means, agg.weight)
    out.update({"grad_norm": grad_norm, "learning_rate": lr})
    out["_pairs"], out["_tokens"] = flags[1].item(), flags[2].item()
    return out


def _diverged(what: str, step_no: int) -> str:
    return (f"training stopped at step {step_no}: {what}. No update was applied for this step and the "
            "last saved checkpoint is intact. Try a lower learning_rate, max_grad_norm: 1.0, bf16 instead of "
            "fp16 (or full float32), or check the data of this step (very long or empty completions).")


@torch.no_grad()
def evaluate(batches: Callable[[], Any], *, model, logps_fn: Callable, ref_source: RefSource,
             losses: LossSettings, bco: RunningMean, accelerator, metric_keys: list[str]) -> dict[str, float]:
    """Pair-weighted means over this process's share of the eval set, reduced over processes."""
    was_training = model.training
    model.eval()
    agg = WeightedMean()
    try:
        for sb in batches():
            sb = to_device(sb, accelerator.device)
            policy = logps_fn(model, sb.batch)
            ref = ref_source(sb, accelerator.device)
            _, m = _loss_and_metrics(policy, ref, losses, bco, accelerator, update_bco=False)
            if sb.counted:
                agg.add({k: v.item() for k, v in m.items()}, sb.batch.num_pairs)
    finally:
        model.train(was_training)
    means = {k: agg.result().get(k, 0.0) for k in metric_keys}
    return reduce_across_processes(accelerator, means, agg.weight)
