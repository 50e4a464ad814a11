"""The batch layout of a run, chosen once at setup: how pairs are collated and how log-probs are
computed from those batches. The policy, the reference and the reference cache all use the same pair.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable

from vlmdpo.batching.plain import collate
from vlmdpo.batching.shared import collate_shared
from vlmdpo.model.families import FamilyAdapter
from vlmdpo.model.fast.forward import fast_batch_logps, resolve_options
from vlmdpo.model.logps import batch_logps
from vlmdpo.types import Batch, EncodedPair, FastOptions, LogpPair, SharedBatch

FAST_SWITCHES = ("share_vision", "shared_prefix", "completion_only_logits", "padding_free")
# Sharded setups gather parameters only inside the wrapped forward (see select_layout).
_SHARDED = ("FSDP", "DEEPSPEED")


@dataclass(frozen=True)
class Layout:
    collate_fn: Callable[[list[EncodedPair]], Batch | SharedBatch]  # pairs -> batch
    logps_fn: Callable[[Any, Any], LogpPair]  # (model, batch) -> LogpPair, for the policy and the reference
    fast_paths: tuple[str, ...] = ()  # the fast switches that are on
    reason_off: str | None = None  # why the fast paths are off although the options ask for some


def select_layout(options: FastOptions, *, model: Any, family: FamilyAdapter, pad_token_id: int,
                  distributed_type: str | None) -> Layout:
    """The fast layout (vision once, shared prefix, completion-only logits, packing) when any fast
    switch is on and the model's attention kernel and the distributed setup allow it, else the plain one.

    `distributed_type` is accelerate's DistributedType value ("MULTI_GPU", "FSDP", ...) of a
    multi-process run, None for one process. Under DDP the fast forward still goes through the
    wrapped model once per step; the pieces it runs beside that call (the vision encoder for a
    shared image, the LM head at completion positions) use parameters that are also in that call's
    graph, so each gradient is reduced once (tests/train/test_distributed.py). FSDP and DeepSpeed
    gather sharded parameters only inside the wrapped forward, so those pieces would see shards:
    they use the plain layout.
    """
    options = resolve_options(options, model)
    plain = Layout(partial(collate, pad_token_id=pad_token_id, family=family), batch_logps)
    on = tuple(k for k in FAST_SWITCHES if getattr(options, k))
    if not on:
        return plain
    if distributed_type in _SHARDED:
        return replace(plain, reason_off=f"fast paths are off under {distributed_type} (plain layout; same values, slower)")
    return Layout(partial(collate_shared, pad_token_id=pad_token_id, family=family, options=options),
                  partial(fast_batch_logps, family=family), fast_paths=on)
