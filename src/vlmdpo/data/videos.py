"""Videos: the check `data check` runs, and the frames a processor gets, read with PyAV.

Frames are sampled at `fps` per second of video (at least 2, at most `max_frames`, spread evenly
over the whole video) and scaled down to `max_pixels` keeping the aspect ratio. The processor
also gets the source frame rate and which frames were taken: Qwen derives timestamps from them.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from typing import Any

from vlmdpo.config.encoding import VIDEO_FPS, VIDEO_MAX_FRAMES, VIDEO_MAX_PIXELS
from vlmdpo.types import ImageRef


class VideoLoadError(ValueError):
    """A video that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class VideoLimits:
    fps: float = VIDEO_FPS
    max_frames: int = VIDEO_MAX_FRAMES
    max_pixels: int | None = VIDEO_MAX_PIXELS


@dataclass
class Video:
    """Sampled RGB frames (uint8 [T, H, W, 3]) and where they came from in the source."""

    frames: Any
    source_fps: float
    total_frames: int
    indices: list[int]

    def metadata(self) -> dict[str, Any]:
        """What transformers' video processors take as `video_metadata` for this video."""
        return {"fps": self.source_fps, "total_num_frames": self.total_frames, "frames_indices": list(self.indices),
                "height": int(self.frames.shape[1]), "width": int(self.frames.shape[2]),
                "duration": self.total_frames / self.source_fps}


def sample_indices(total: int, source_fps: float, fps: float, max_frames: int) -> list[int]:
    """Evenly spread frame indices: `fps` per second of video, at least 2, at most max_frames."""
    if total <= 0:
        return []
    want = math.ceil(total / source_fps * fps) if source_fps > 0 else total
    n = min(total, max_frames, max(2, want))
    if n <= 1:
        return [0]
    return sorted({round(i * (total - 1) / (n - 1)) for i in range(n)})


def scaled_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """(width, height) shrunk by one area factor to fit max_pixels; never enlarged."""
    if not max_pixels or width * height <= max_pixels:
        return width, height
    f = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * f)), max(1, int(height * f))


def check_video(ref: ImageRef, *, decode: bool = False) -> str | None:
    """None when the video can be used, else what is wrong: missing, empty, not a video (its
    header, or with decode=True its first frame, cannot be read by the decoder)."""
    problem = _file_problem(ref)
    if problem is not None:
        return problem
    try:
        with _open(ref) as container:
            stream = _video_stream(container, ref)
            if decode and _first_frame(container, stream, ref) is None:
                _fail(ref, "no frame can be decoded")
    except VideoLoadError as e:
        return str(e)
    return None


def load_video(ref: ImageRef, limits: VideoLimits = VideoLimits()) -> Video:
    """The sampled, scaled RGB frames of one video; VideoLoadError names the file when it cannot be read."""
    import numpy as np

    problem = _file_problem(ref)
    if problem is not None:
        raise VideoLoadError(problem)
    with _open(ref) as container:
        stream = _video_stream(container, ref)
        rate = stream.average_rate or stream.guessed_rate
        source_fps = float(rate) if rate else limits.fps
        total = stream.frames or _count_frames(ref)
        wanted = set(sample_indices(total, source_fps, limits.fps, limits.max_frames))
        width, height = scaled_size(stream.codec_context.width, stream.codec_context.height, limits.max_pixels)
        frames, taken = [], []
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
                    taken.append(i)
        except _av_errors() as e:
            _fail(ref, f"decoding stopped at frame {len(taken)} ({_reason(e)})")
    if not frames:
        _fail(ref, "no frame can be decoded")
    return Video(np.stack(frames), source_fps, max(total, taken[-1] + 1), taken)


# ------------------------------------------------------------------------------------------ helpers
def _file_problem(ref: ImageRef) -> str | None:
    if ref.url is not None:
        return f"remote videos are not supported: {ref.url}; download it and give its path"
    if ref.pil is not None:
        return f"{ref.describe()} is an image, not a video"
    if ref.path is None:
        return None if ref.data else f"video holds no bytes: {ref.describe()}"
    try:
        size = os.stat(ref.path).st_size
    except FileNotFoundError:
        return f"video not found: {ref.path}{_said(ref)}"
    except OSError as e:
        return f"video cannot be read: {ref.path} ({e.strerror})"
    return f"video file is empty: {ref.path}" if size == 0 else None


def _open(ref: ImageRef):
    import av

    try:
        return av.open(ref.path if ref.path is not None else io.BytesIO(ref.data), mode="r")
    except _av_errors() as e:
        _fail(ref, f"not a readable video ({_reason(e)})")


def _video_stream(container, ref: ImageRef):
    if not container.streams.video:
        _fail(ref, "the file has no video stream")
    return container.streams.video[0]


def _first_frame(container, stream, ref: ImageRef):
    try:
        return next(container.decode(stream), None)
    except _av_errors() as e:
        _fail(ref, f"its first frame cannot be decoded ({_reason(e)})")


def _count_frames(ref: ImageRef) -> int:
    """Frames by demuxing (containers that do not record a frame count in their header)."""
    with _open(ref) as container:
        stream = _video_stream(container, ref)
        return sum(1 for packet in container.demux(stream) if packet.size)


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.FFmpegError, OSError, ValueError, EOFError)


def _fail(ref: ImageRef, why: str):
    raise VideoLoadError(f"video {ref.describe()}{_said(ref)}: {why}")


def _said(ref: ImageRef) -> str:
    return f" (the row says '{ref.origin}')" if ref.origin and ref.origin != ref.path else ""


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
