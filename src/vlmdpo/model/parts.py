"""Which part of a VLM a parameter or module belongs to, freezing, and the LoRA plan.

Parts come from the family adapter as module paths; a name belongs to the part with the
longest matching path (Qwen's projector `model.visual.merger` sits inside the vision tower
`model.visual`). Names outside every listed path count as language model.
"""
from __future__ import annotations

import torch

from vlmdpo.model.families import FamilyAdapter

PARTS = ("vision_tower", "projector", "language_model")


def part_of(name: str, family: FamilyAdapter) -> str:
    best, best_len = "language_model", -1
    for part, paths in family.parts().items():
        for path in paths:
            if (name == path or name.startswith(path + ".")) and len(path) > best_len:
                best, best_len = part, len(path)
    return best


def param_part(name: str, family: FamilyAdapter) -> str:
    """The part of a parameter of the model being trained: a LoRA-wrapped model's names start with peft's
    "base_model.model." and hold "lora_A.default" / "modules_to_save.default" inside the module path, which
    still starts with the part's path."""
    return part_of(name.removeprefix("base_model.model."), family) if family.is_vlm else "language_model"


def frozen_parts(*, vision: bool, projector: bool, language: bool) -> set[str]:
    flags = {"vision_tower": vision, "projector": projector, "language_model": language}
    return {part for part, frozen in flags.items() if frozen}


def apply_freezing(model, family: FamilyAdapter, *, vision: bool, projector: bool, language: bool) -> None:
    """Full fine-tuning: every parameter trains except those of the frozen parts."""
    frozen = frozen_parts(vision=vision, projector=projector, language=language) if family.is_vlm else (
        {"language_model"} if language else set())
    for name, param in model.named_parameters():
        param.requires_grad_(part_of(name, family) not in frozen)


def _output_layer_names(model) -> set[str]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {n for n, m in model.named_modules() if head is not None and m is head}


def lora_plan(model, family: FamilyAdapter, *, target, modules: str, vision: bool, projector: bool,
              language: bool) -> tuple[list[str], list[str]]:
    """(LoRA target module names, modules_to_save) for a LoRA / QLoRA run.

    LoRA goes on the linear layers of the language model, and also of the vision tower and
    projector when `modules` is "all". A trainable vision tower / projector without LoRA is
    trained in full as a `modules_to_save` copy, so disabling adapters still restores the
    original (the reference model). The output layer never gets LoRA: log-probs read its weight.
    """
    frozen = frozen_parts(vision=vision, projector=projector, language=language) if family.is_vlm else (
        {"language_model"} if language else set())
    lora_parts = {"language_model"} if modules == "language_model" else set(PARTS)
    lora_parts -= frozen
    skip = _output_layer_names(model)
    wanted = None if target in ("all-linear", "all_linear", None) else set([target] if isinstance(target, str) else target)
    targets = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name in skip:
            continue
        if part_of(name, family) not in lora_parts:
            continue
        if wanted is not None and name.rsplit(".", 1)[-1] not in wanted and name not in wanted:
            continue
        targets.append(name)

    to_save: list[str] = []
    if family.is_vlm:
        full_parts = set(PARTS) - frozen - lora_parts - {"language_model"}
        for part in ("vision_tower", "projector"):  # vision first: it may contain the projector
            if part not in full_parts:
                continue
            for path in family.parts()[part]:
                if any(path.startswith(p + ".") for p in to_save):
                    continue  # already inside a saved module
                module = _get(model, path)
                if isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict)):
                    # a wrapper around a container would break the model's iteration over it
                    to_save.extend(f"{path}.{child}" for child, _ in module.named_children())
                elif isinstance(module, torch.nn.Module):
                    to_save.append(path)
    return targets, to_save


def _get(model, path: str):
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None  # a bare parameter (LLaVA-NeXT's image_newline): stays frozen under LoRA
