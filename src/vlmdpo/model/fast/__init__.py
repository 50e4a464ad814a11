"""Fast paths for preference training: vision once, shared prefix, completion-only logits,
padding-free rows. Each is switchable and tested equal to the plain path."""
from __future__ import annotations

from vlmdpo.model.fast.forward import fast_batch_logps, resolve_options
from vlmdpo.model.fast.logits import head_logps, reduce_completion_logps
from vlmdpo.model.fast.vision import can_share_vision, encode_vision

__all__ = [
    "fast_batch_logps", "resolve_options", "head_logps", "reduce_completion_logps", "can_share_vision", "encode_vision",
]
