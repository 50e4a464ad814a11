"""A training checkpoint (`checkpoint-N`) as a model in use. It is accelerate state, not an adapter:
the trainable tensors only (LoRA weights, or the unfrozen parts), under the policy's own parameter
names. So the policy is rebuilt as the run built it (base + LoRA from the run's `vlmdpo_config.yaml`,
found beside the checkpoint) and those tensors are loaded into it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmdpo.errors import ModelLoadError

STATE_FILE = "trainer_state.json"  # what marks a complete vlmdpo checkpoint (train/checkpoint.py writes it)
WEIGHTS_FILE = "model.safetensors"  # accelerate's save_state name for the first model
POLICY_KEYS = ("finetuning_type", "lora_rank", "lora_alpha", "lora_dropout", "lora_target", "lora_modules",
               "freeze_vision_tower", "freeze_projector", "freeze_language_model", "seed")


def is_checkpoint(path: Path) -> bool:
    return (path / STATE_FILE).is_file() and not (path / "adapter_config.json").is_file()


def policy_settings(train_config: dict[str, Any]) -> dict[str, Any]:
    """The run's trainable settings, TrainConfig's defaults where the saved config leaves one out."""
    from vlmdpo.config import TrainConfig

    out = {key: train_config.get(key, TrainConfig.model_fields[key].default) for key in POLICY_KEYS}
    if out["finetuning_type"] == "qlora":  # same LoRA tensors; the base is loaded unquantized for inference
        out["finetuning_type"] = "lora"
    return out


def apply_checkpoint(base_model: Any, path: Path, train_config: dict[str, Any]) -> Any:
    """`base_model` made into the run's policy with the checkpoint's trained tensors; the fix when it cannot."""
    from safetensors.torch import load_file

    from vlmdpo.model.families import adapter_for
    from vlmdpo.model.prepare import prepare_for_training, quiet_peft_warnings

    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{path}: checkpoint without {WEIGHTS_FILE}", "pass a complete checkpoint-N folder, or the "
                             "run's output_dir (its final model)")
    with quiet_peft_warnings():
        model = prepare_for_training(base_model, adapter_for(base_model), gradient_checkpointing=False,
                                     **policy_settings(train_config))
    state = load_file(str(weights))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ModelLoadError(f"{path}: the checkpoint's tensors do not fit the model its run config describes "
                             f"(e.g. {result.unexpected_keys[0]})", "pass --base with the model the run trained")
    for p in model.parameters():
        p.requires_grad_(False)
    return model
