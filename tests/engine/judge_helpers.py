"""Helpers for judge tests: a random LoRA adapter on `tiny:causal_lm`, saved as training saves it."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch


def causal_lm_adapter(folder: Path, seed: int = 1) -> Path:
    from peft import LoraConfig, get_peft_model

    from vlmdpo.model.tiny import build_tiny

    model, tokenizer = build_tiny("causal_lm")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # init_lora_weights=False draws B randomly too (the default zeros it: the adapter would be a no-op)
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                      init_lora_weights=False))
    peft_model.peft_config["default"].base_model_name_or_path = "tiny:causal_lm"
    with warnings.catch_warnings():  # peft looks for a config.json under `tiny:...` to check the vocab
        warnings.filterwarnings("ignore", message="Could not find a config file")
        peft_model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
