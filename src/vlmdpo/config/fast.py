"""Config keys: the fast paths. Each applies when the model provides it and is tested equal to the plain path."""
from __future__ import annotations

from vlmdpo.config.base import Keys, at_least_one, peer


class FastKeys(Keys):
    """Fast paths: used when the model provides them and they apply; each is tested equal to the plain path."""

    share_vision: bool = True
    """Run the vision encoder once per pair (and reuse it for the reference when frozen)."""
    shared_prefix: bool = True
    """Put prompt, chosen and rejected in one row so the prompt is computed once."""
    completion_only_logits: bool = True
    """Compute the LM head on completion positions only, in chunks."""
    padding_free: bool = peer(False, trl="padding_free")
    """Pack several pairs into one row without padding (block-sparse attention with flex_attention)."""
    max_tokens_per_row: int | None = None
    """How many tokens one packed row may hold with padding_free; null = one row."""

    def problems(self) -> list[str]:
        return at_least_one(self, (), ("max_tokens_per_row",))
