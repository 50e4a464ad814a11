"""The batch layout of a run, chosen once at setup: how pairs are collated and how log-probs are
computed from those batches. The policy, the reference and the reference cache all use the same pair.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable

from vlmdpo.batching.plain import collate
from vlmdpo.batching.shared import collate_shared
from vlmdpo.errors import FixableError
from vlmdpo.model.families import FamilyAdapter, adapter_for
from vlmdpo.model.fast.forward import fast_batch_logps, resolve_options
from vlmdpo.model.fast.vision import PIXEL_KEYS
from vlmdpo.model.logps import batch_logps
from vlmdpo.model.placement import model_device
from vlmdpo.types import Batch, EncodedPair, FastOptions, LogpPair, SharedBatch

FAST_SWITCHES = ("share_vision", "shared_prefix", "completion_only_logits", "padding_free")
_SHARDED = ("FSDP", "FSDP2", "DEEPSPEED")
# Setups the fast layout is not made for, and why (see select_layout).
_PLAIN_ONLY = {
    "FSDP": "FSDP1 (fsdp_version: 1) gathers its flat parameters only inside the wrapped forward; "
            "set fsdp_version: 2 (examples/accelerate/fsdp2.yaml) to keep them",
    "DEEPSPEED": "they are not tested under DeepSpeed; use FSDP2 (examples/accelerate/fsdp2.yaml) or DDP "
                 "to keep them",
}


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
    multi-process run ("FSDP2" for FSDP with fsdp_version 2: `distributed_kind`), None for one
    process. The fast forward goes through the wrapped model once and uses parameters only inside
    that call (the vision encoder and the completion-only LM head run from pre-hooks), so DDP
    reduces each gradient once (tests/train/test_distributed.py) and FSDP2's hooks have gathered
    each unit (tests/train/test_fsdp2.py). FSDP1 and DeepSpeed use the plain layout (`_PLAIN_ONLY`).
    Sharded setups check that all processes' batches agree on having images (`_same_vision_everywhere`).
    """
    layout = _layout(resolve_options(options, model), family, pad_token_id, distributed_type)
    if distributed_type in _SHARDED and adapter_for(family).is_vlm:
        layout = replace(layout, logps_fn=partial(_same_vision_everywhere, layout.logps_fn, distributed_type))
    return layout


def _layout(options: FastOptions, family: FamilyAdapter, pad_token_id: int, distributed_type: str | None) -> Layout:
    plain = Layout(partial(collate, pad_token_id=pad_token_id, family=family), batch_logps)
    on = tuple(k for k in FAST_SWITCHES if getattr(options, k))
    if not on:
        return plain
    if distributed_type in _PLAIN_ONLY:
        return replace(plain, reason_off=f"fast paths are off under {distributed_type} (plain layout: same values, "
                                         f"slower): {_PLAIN_ONLY[distributed_type]}")
    return Layout(partial(collate_shared, pad_token_id=pad_token_id, family=family, options=options),
                  partial(fast_batch_logps, family=family), fast_paths=on)


def _has_vision(batch: Batch | SharedBatch) -> bool:
    if isinstance(batch, SharedBatch):
        return bool(batch.vision)
    return any(k in batch.model_inputs for k in PIXEL_KEYS)


def _same_vision_everywhere(logps_fn: Callable, kind: str, model: Any, batch: Batch | SharedBatch) -> LogpPair:
    """`logps_fn`, once every process is known to have images in its batch, or none to.

    Sharded setups gather a unit's parameters with a collective when the unit runs: a process
    whose batch has no image skips the vision units the others run, and all of them would wait
    forever (or fail deep inside the collective library). One small all-reduce per forward says so.
    """
    import torch
    import torch.distributed as dist

    mine = _has_vision(batch)
    flag = torch.tensor([float(mine)], device=model_device(model))
    dist.all_reduce(flag)
    if 0 < flag.item() < dist.get_world_size():
        raise FixableError(
            f"under {kind} the micro-batches of all processes must have images or none, but this one "
            f"({', '.join(batch.ids[:3])}{', ...' if len(batch.ids) > 3 else ''}) has {'some' if mine else 'none'} "
            "and another's differs (text-only pairs next to image pairs)",
            "train with DDP (examples/accelerate/ddp.yaml), or give every pair an image, or train the "
            "text-only pairs in a run of their own")
    return logps_fn(model, batch)


def distributed_kind(acc: Any) -> str | None:
    """What `select_layout` needs to know of an accelerate.Accelerator: its DistributedType value
    ("MULTI_GPU", "FSDP", "DEEPSPEED", ...; "FSDP2" for fsdp_version 2), None for one process."""
    if acc.num_processes <= 1:
        return None
    kind = str(getattr(acc.distributed_type, "value", acc.distributed_type))
    return "FSDP2" if kind == "FSDP" and getattr(acc, "is_fsdp2", False) else kind
