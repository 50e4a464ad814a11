"""Config keys: the fast paths. Each applies when the model provides it and is tested equal to the plain path."""
from __future__ import annotations

from vlmdpo.config.base import Keys, at_least_one, peer
from vlmdpo.types import FastOptions

# FastOptions holds the fast-path defaults (library callers build it directly); the keys take them from there.
_FAST = FastOptions()


class FastKeys(Keys):
    """Fast paths: used when the model provides them and they apply; each is tested equal to the plain path."""

    share_vision: bool = _FAST.share_vision
    """Run the vision encoder once per pair (and reuse it for the reference when frozen)."""
    shared_prefix: bool = _FAST.shared_prefix
    """Put prompt, chosen and rejected in one row so the prompt is computed once."""
    completion_only_logits: bool = _FAST.completion_only_logits
    """Compute the LM head on completion positions only, in chunks."""
    padding_free: bool = peer(_FAST.padding_free, trl="padding_free")
    """Pack several pairs into one row without padding (block-sparse attention with flex_attention)."""
    max_tokens_per_row: int | None = _FAST.max_tokens_per_row
    """How many tokens one packed row may hold with padding_free; null = one row."""

    def problems(self) -> list[str]:
        return at_least_one(self, (), ("max_tokens_per_row",))

    def fast_options(self) -> FastOptions:
        return FastOptions(share_vision=self.share_vision, shared_prefix=self.shared_prefix,
                           completion_only_logits=self.completion_only_logits, padding_free=self.padding_free,
                           max_tokens_per_row=self.max_tokens_per_row)
