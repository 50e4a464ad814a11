"""Helpers for the serve tests: images as data URIs, a random LoRA adapter, the error shape."""
from __future__ import annotations

import base64
import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def png_bytes(seed: int = 0, size: tuple[int, int] = (80, 64)) -> bytes:
    rng = np.random.RandomState(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.randint(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def bomb_png(side: int = 30000) -> bytes:
    """A PNG whose header claims side x side pixels (over the decompression-bomb limit) in 69 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def image_message(text: str, uri: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": text}]}]


def random_adapter(folder: Path, family: str = "idefics3", seed: int = 1) -> Path:
    """A LoRA adapter on tiny:<family> laid out as training lays it out, with random (non-zero) B so
    that it changes the answers."""
    from vlmdpo.model.families import adapter_for
    from vlmdpo.model.prepare import prepare_for_training
    from vlmdpo.model.tiny import build_tiny

    model, processor = build_tiny(family)
    peft_model = prepare_for_training(
        model, adapter_for(model), finetuning_type="lora", lora_rank=4, lora_alpha=16, lora_dropout=0.0,
        lora_target="all-linear", lora_modules="language_model", freeze_vision_tower=True, freeze_projector=False,
        freeze_language_model=False, gradient_checkpointing=False, seed=seed)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    peft_model.peft_config["default"].base_model_name_or_path = f"tiny:{family}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Could not find a config file")
        peft_model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


def assert_error(response, status: int, param: str | None) -> dict:
    """OpenAI's error shape, naming the field."""
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["param"] == param, error
    assert "Traceback" not in error["message"] and error["message"], error
    if param:
        assert param in error["message"], error
    return error
