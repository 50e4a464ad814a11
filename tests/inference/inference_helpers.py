"""Helpers for inference/chat/compare/export tests: tiny random models and LoRA adapters on disk."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (80, 64)) -> Path:
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def make_adapter(folder: Path, family: str, *, record_base: bool = True, seed: int = 1, rank: int = 4) -> Path:
    """A LoRA adapter on `tiny:<family>` (seed 0, as `tiny:` names load), saved with the processor as a
    training run saves it. LoRA B is random (not zero) and, for VLMs, the projector is a trained full
    copy (modules_to_save, as training makes it) perturbed from the base, so merging changes weights."""
    from peft import LoraConfig, get_peft_model

    from vlmdpo.model.families import adapter_for
    from vlmdpo.model.tiny import build_tiny

    model, processor = build_tiny(family)
    to_save = list(adapter_for(model).projector) or None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # init_lora_weights=False draws B randomly too (the default zeros it, making the adapter a no-op)
        config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False,
                            modules_to_save=to_save)
        peft_model = get_peft_model(model, config)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "modules_to_save.default" in name:
                    p.add_(0.05 * torch.randn_like(p))
    if to_save:
        assert any("modules_to_save.default" in n for n, _ in peft_model.named_parameters()), to_save
    peft_model.peft_config["default"].base_model_name_or_path = f"tiny:{family}" if record_base else None
    with warnings.catch_warnings():  # peft looks for a config.json under `tiny:...` to check the vocab
        warnings.filterwarnings("ignore", message="Could not find a config file")
        peft_model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class Piped(io.StringIO):
    def isatty(self) -> bool:
        return False
