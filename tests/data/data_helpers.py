"""Helpers for data-layer tests: tiny images and data files written into tmp_path."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image


def make_image(path: Path, size: tuple[int, int] = (8, 6), color=(200, 30, 30), mode: str = "RGB") -> Path:
    """Write a small real image (format from the suffix) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new(mode, size, color if mode == "RGB" else 128)
    img.save(path)
    return path


def png_bytes(size: tuple[int, int] = (5, 4), color=(10, 200, 10), mode: str = "RGB") -> bytes:
    import io

    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 77).save(buf, format="PNG")
    return buf.getvalue()


def write_jsonl(path: Path, rows: list, raw_lines: dict[int, str] | None = None) -> Path:
    """Rows as JSON lines; raw_lines {index: text} inserts literal (possibly broken) lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows]
    for index, text in sorted((raw_lines or {}).items()):
        lines.insert(index, text)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_json(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def text(t: str) -> dict:
    return {"type": "text", "text": t}


IMG = {"type": "image"}
VID = {"type": "video"}


def user(*parts) -> dict:
    return {"role": "user", "content": list(parts)}


def assistant(*parts) -> dict:
    return {"role": "assistant", "content": list(parts)}


def system(*parts) -> dict:
    return {"role": "system", "content": list(parts)}


def trl_row(**over) -> dict:
    """A valid text-only TRL conversational row, with overrides."""
    row = {
        "prompt": [{"role": "user", "content": "What color is the sky?"}],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "Green."}],
    }
    row.update(over)
    return row


@pytest.fixture
def img_dir(tmp_path: Path) -> Path:
    """tmp_path with img/0.jpg, img/1.png and a grayscale img/gray.png."""
    make_image(tmp_path / "img" / "0.jpg")
    make_image(tmp_path / "img" / "1.png", color=(0, 0, 255))
    make_image(tmp_path / "img" / "gray.png", mode="L")
    return tmp_path
