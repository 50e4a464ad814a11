"""Rows with videos for the video fault tests (the mp4s come from vlmdpo.model.tiny.tiny_video)."""
from __future__ import annotations

import json
from pathlib import Path


def write_fake_video(path: Path) -> Path:
    """A text file named like a video: what `data check` must reject at its row."""
    path.write_text("this is not a video\n", encoding="utf-8")
    return path


def swift_video_rows(path: Path, videos: list[str], n: int = 2) -> Path:
    """ms-swift rows, each with one <video> placeholder and one of `videos` (cycled)."""
    rows = [{"messages": [{"role": "user", "content": "<video>What happens in the clip?"},
                          {"role": "assistant", "content": f"Colours flicker quickly, take {i}."}],
             "videos": [videos[i % len(videos)]], "rejected_response": "A cat sleeps."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
