"""Config keys: what trains (LoRA, QLoRA or full fine-tuning, and which parts are frozen)."""
from __future__ import annotations

from typing import Literal

from vlmdpo.config.base import Keys, peer

LORA_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "lora_modules")


class TrainableKeys(Keys):
    """What trains: LoRA, QLoRA or all weights, and which parts stay frozen."""

    finetuning_type: Literal["lora", "qlora", "full"] = peer("lora", trl="~use_peft", llamafactory="finetuning_type")
    """LoRA adapters, LoRA on a 4-bit quantised model (needs bitsandbytes), or all weights."""
    lora_rank: int = peer(16, trl="lora_r", llamafactory="lora_rank")
    """Rank of the LoRA matrices."""
    lora_alpha: int = peer(32, trl="lora_alpha", llamafactory="lora_alpha")
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_rank)."""
    lora_dropout: float = peer(0.05, trl="lora_dropout", llamafactory="lora_dropout")
    """Dropout on the LoRA input, in [0, 1)."""
    lora_target: str | list[str] = peer("all-linear", trl="lora_target_modules", llamafactory="lora_target")
    """Modules that get adapters: all-linear, or a list of module names (q_proj, v_proj, ...)."""
    lora_modules: Literal["language_model", "all"] = "language_model"
    """Where LoRA goes: the language model only, or every unfrozen part (vision tower and projector too)."""
    freeze_vision_tower: bool = peer(True, llamafactory="freeze_vision_tower")
    """Keep the vision encoder fixed; unfrozen, it trains in full unless lora_modules is all."""
    freeze_projector: bool = peer(False, llamafactory="freeze_multi_modal_projector")
    """Keep the vision-to-text projector fixed; unfrozen, it trains like the vision encoder."""
    freeze_language_model: bool = peer(False, llamafactory="freeze_language_model")
    """Keep the language model fixed (train the vision side only)."""

    def problems(self) -> list[str]:
        problems: list[str] = []
        add = problems.append
        if self.finetuning_type == "full":
            for key in LORA_KEYS:
                if key in self.model_fields_set:
                    add(f"{key}: is a LoRA option but finetuning_type is 'full'; remove it or use finetuning_type: lora")
        else:
            if self.lora_rank < 1:
                add(f"lora_rank: must be >= 1 (got {self.lora_rank})")
            if not 0 <= self.lora_dropout < 1:
                add(f"lora_dropout: must be in [0, 1) (got {self.lora_dropout})")
        if self.freeze_vision_tower and self.freeze_projector and self.freeze_language_model \
                and self.finetuning_type == "full":
            add("freeze_language_model: with the vision tower and projector frozen too, nothing would train")
        return problems
