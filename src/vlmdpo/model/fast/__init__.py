"""Fast paths for preference training: vision once, shared prefix, completion-only logits,
padding-free rows. Each is switchable and tested equal to the plain path."""
from __future__ import annotations

from vlmdpo.collate_shared import FastOptions
from vlmdpo.model.fast.forward import fast_batch_logps, reference_logps, resolve_options, shared_vision_features
from vlmdpo.model.fast.logits import completion_logps, reduce_logps
from vlmdpo.model.fast.vision import can_share_vision, encode_vision

__all__ = [
    "FastOptions", "fast_batch_logps", "reference_logps", "resolve_options", "shared_vision_features",
    "completion_logps", "reduce_logps", "can_share_vision", "encode_vision",
]
