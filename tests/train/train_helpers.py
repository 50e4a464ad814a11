"""Fixtures for training tests: text-only preference files and tiny-model configs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SAMPLE_IMAGES = REPO / "src" / "vlmdpo" / "samples" / "trl" / "prefs.jsonl"



def write_text_prefs(path: Path, n: int = 8, *, long_row: int | None = None) -> Path:
    rows = []
    for i in range(n):
        chosen = f"It is {2 * i}."
        if i == long_row:
            chosen = "It is " + " ".join(["very"] * 400) + " long."
        rows.append({"id": f"p{i}", "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": f"Maybe {2 * i + 1}, I think."}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def text_prefs(tmp_path) -> Path:
    return write_text_prefs(tmp_path / "prefs.jsonl")


def tiny_config(tmp_path: Path, data: Path, **overrides):
    from vlmdpo.config import load_config

    values = dict(model_name_or_path="tiny:causal_lm", dataset=str(data), output_dir=str(tmp_path / "out"),
                  max_steps=4, per_device_train_batch_size=2, learning_rate=5e-3, logging_steps=1,
                  save_steps=None, progress_bar=False, max_length=256, seed=7, lora_rank=4, lora_alpha=8)
    values.update(overrides)
    if values.get("finetuning_type") == "full":
        for k in ("lora_rank", "lora_alpha"):
            values.pop(k, None)
    return load_config(None, values)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
