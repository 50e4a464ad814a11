"""Config keys: how pairs become tokens (image and video resolution, length limit, truncation)."""
from __future__ import annotations

from typing import Literal

from vlmdpo.config.base import Keys, at_least_one, peer

# LLaMA-Factory's defaults; `vlmdpo.data.videos.VideoLimits` starts from the same values.
VIDEO_FPS, VIDEO_MAX_FRAMES, VIDEO_MAX_PIXELS = 2.0, 128, 256 * 256


class EncodingKeys(Keys):
    """Encoding: image and video resolution, the length limit, and truncation."""

    image_max_pixels: int | None = peer(None, llamafactory="image_max_pixels")
    """Images larger than this many pixels are scaled down (keeping aspect); null = the processor's default."""
    image_min_pixels: int | None = peer(None, llamafactory="image_min_pixels")
    """Images smaller than this many pixels are scaled up; null = the processor's default."""
    video_fps: float = peer(VIDEO_FPS, llamafactory="video_fps")
    """Frames per second sampled from each video (Qwen2-VL / 2.5-VL / 3-VL); at least 2 frames are kept."""
    video_max_frames: int = peer(VIDEO_MAX_FRAMES, llamafactory="video_maxlen")
    """Most frames taken from one video; longer videos are sampled evenly down to this many."""
    video_max_pixels: int | None = peer(VIDEO_MAX_PIXELS, llamafactory="video_max_pixels")
    """Video frames larger than this many pixels are scaled down (keeping aspect); null = the processor's default."""
    max_length: int = peer(2048, trl="max_length", llamafactory="~cutoff_len")
    """Most tokens in prompt + completion; longer pairs are handled as truncation says."""
    truncation: Literal["completions", "drop"] = "completions"
    """Over max_length: cut the completions (never inside image tokens), or drop the pair and report it."""
    max_prompt_length: int | None = peer(None, trl="max_prompt_length")
    """Most prompt tokens: longer prompts lose their oldest text tokens (cut from the left, never inside image or video tokens; a pair whose cut would fall inside them is dropped and reported); null = no prompt limit."""
    max_completion_length: int | None = peer(None, trl="max_completion_length")
    """Most tokens of each completion: longer ones are cut at the end, as truncation: completions cuts them (the end-of-turn token counts as one of them); null = no completion limit."""
    dataset_num_proc: int | None = peer(None, trl="dataset_num_proc", llamafactory="preprocessing_num_workers")
    """Processes that encode the pairs (chat template, images, processor) in the check before training; null = 1."""

    def problems(self) -> list[str]:
        problems = at_least_one(self, ("max_length", "video_max_frames"),
                                ("image_max_pixels", "image_min_pixels", "video_max_pixels", "max_prompt_length",
                                 "max_completion_length", "dataset_num_proc"))
        if not self.video_fps > 0:
            problems.append(f"video_fps: must be > 0 (got {self.video_fps})")
        if self.image_max_pixels and self.image_min_pixels and self.image_min_pixels > self.image_max_pixels:
            problems.append(f"image_min_pixels: {self.image_min_pixels} is larger than image_max_pixels "
                            f"{self.image_max_pixels}")
        return problems
