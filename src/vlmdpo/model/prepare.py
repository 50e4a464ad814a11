"""A loaded model made ready to train: dropout off, checkpointing, then LoRA or freezing.

Loading the weights is the inference layer's job (`vlmdpo.inference.load_for_training`); this
module only changes a model that is already in memory.
"""
from __future__ import annotations

import contextlib
import warnings

import torch

from vlmdpo.errors import ModelLoadError
from vlmdpo.model.families import FamilyAdapter
from vlmdpo.model.parts import apply_freezing, lora_plan


def prepare_for_training(model, family: FamilyAdapter, *, finetuning_type: str, lora_rank: int, lora_alpha: int,
                         lora_dropout: float, lora_target, lora_modules: str, freeze_vision_tower: bool,
                         freeze_projector: bool, freeze_language_model: bool, gradient_checkpointing: bool,
                         seed: int):
    """The policy to train: `model` itself (full) or a peft.PeftModel around it (lora / qlora)."""
    disable_dropout(model)  # dropout would make policy and reference differ on identical weights
    if gradient_checkpointing:
        enable_checkpointing(model)
    if finetuning_type == "full":
        apply_freezing(model, family, vision=freeze_vision_tower, projector=freeze_projector,
                       language=freeze_language_model)
    else:
        targets, to_save = lora_plan(model, family, target=lora_target, modules=lora_modules,
                                     vision=freeze_vision_tower, projector=freeze_projector,
                                     language=freeze_language_model)
        if not targets:
            raise ModelLoadError(f"lora_target {lora_target!r} matches no linear layer in the trainable parts",
                                 "use lora_target: all-linear, or names such as [q_proj, v_proj]")
        model = wrap_lora(model, targets, to_save, rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout,
                          gradient_checkpointing=gradient_checkpointing, seed=seed)
    if not any(p.requires_grad for p in model.parameters()):
        raise ModelLoadError("every parameter is frozen: nothing would train",
                             "unfreeze something (freeze_language_model: false, or freeze_projector: false)")
    return model


def wrap_lora(model, targets: list[str], to_save: list[str], *, rank: int, alpha: int, dropout: float,
              gradient_checkpointing: bool, seed: int):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                      modules_to_save=to_save or None, task_type="CAUSAL_LM")
    if gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings + checkpointing would cut the graph
    with torch.random.fork_rng(devices=[]), quiet_peft_warnings():  # LoRA A init from the run's seed
        torch.manual_seed(int(seed))
        return get_peft_model(model, lora)


def disable_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def enable_checkpointing(model) -> None:
    """Activation checkpointing, non-reentrant (works with frozen inputs and under no_grad)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def disable_checkpointing(model) -> None:
    if hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    elif hasattr(model, "gradient_checkpointing_disable"):
        model.gradient_checkpointing_disable()


def is_checkpointing(model) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


@contextlib.contextmanager
def quiet_peft_warnings():
    """peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`: noise for our users, not theirs to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
