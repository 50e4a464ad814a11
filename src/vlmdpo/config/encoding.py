"""Config keys: how pairs become tokens (image resolution, length limit, truncation)."""
from __future__ import annotations

from typing import Literal

from vlmdpo.config.base import Keys, at_least_one, peer


class EncodingKeys(Keys):
    """Encoding: image resolution, the length limit, and truncation."""

    image_max_pixels: int | None = peer(None, llamafactory="image_max_pixels")
    """Images larger than this many pixels are scaled down (keeping aspect); null = the processor's default."""
    image_min_pixels: int | None = peer(None, llamafactory="image_min_pixels")
    """Images smaller than this many pixels are scaled up; null = the processor's default."""
    max_length: int = peer(2048, trl="max_length", llamafactory="~cutoff_len")
    """Most tokens in prompt + completion; longer pairs are handled as truncation says."""
    truncation: Literal["completions", "drop"] = "completions"
    """Over max_length: cut the completions (never inside image tokens), or drop the pair and report it."""

    def problems(self) -> list[str]:
        problems = at_least_one(self, ("max_length",), ("image_max_pixels", "image_min_pixels"))
        if self.image_max_pixels and self.image_min_pixels and self.image_min_pixels > self.image_max_pixels:
            problems.append(f"image_min_pixels: {self.image_min_pixels} is larger than image_max_pixels "
                            f"{self.image_max_pixels}")
        return problems
