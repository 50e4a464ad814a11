"""Config keys: optimisation (learning rate, schedule, batch sizes, precision, steps)."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import field_validator

from vlmdpo.config.base import Keys, at_least_one, hf, unknown

# transformers schedulers that need no extra arguments
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")
DEFAULT_LR = {"lora": 5e-5, "qlora": 5e-5, "full": 5e-6}


class OptimKeys(Keys):
    """Optimisation: learning rate, schedule, batch sizes, precision, steps."""

    learning_rate: float | None = hf(None, "learning_rate")
    """Peak learning rate; null = 5e-5 for lora / qlora, 5e-6 for full."""
    vision_tower_lr: float | None = None
    """Peak learning rate of the vision tower's trainable weights (freeze_vision_tower: false); null = learning_rate (ms-swift: vit_lr)."""
    projector_lr: float | None = None
    """Peak learning rate of the projector's trainable weights (freeze_projector: false); null = learning_rate (ms-swift: aligner_lr)."""
    lr_scheduler_type: str = hf("linear", "lr_scheduler_type")
    """Learning-rate schedule after warmup (a transformers scheduler that needs no extra arguments)."""
    warmup_ratio: float = hf(0.0, "warmup_ratio")
    """Fraction of the optimizer steps spent warming up linearly from 0, in [0, 1)."""
    warmup_steps: int = hf(0, "warmup_steps")
    """Warmup optimizer steps; wins over warmup_ratio when > 0 (as in HF)."""
    num_train_epochs: float = hf(1.0, "num_train_epochs")
    """Passes over the training data (may be fractional)."""
    max_steps: int = hf(-1, "max_steps")
    """Optimizer steps to run; > 0 overrides num_train_epochs."""
    per_device_train_batch_size: int = hf(2, "per_device_train_batch_size")
    """Pairs per micro-batch on each device."""
    per_device_eval_batch_size: int | None = hf(None, "per_device_eval_batch_size")
    """Pairs per evaluation batch on each device; null = per_device_train_batch_size."""
    gradient_accumulation_steps: int = hf(1, "gradient_accumulation_steps")
    """Micro-batches summed into one optimizer step."""
    gradient_checkpointing: bool = hf(False, "gradient_checkpointing")
    """Recompute activations in the backward pass: less memory, slower steps."""
    max_grad_norm: float | None = hf(1.0, "max_grad_norm")
    """Clip the gradient norm to this value; null turns clipping off."""
    weight_decay: float = hf(0.0, "weight_decay")
    """AdamW weight decay."""
    bf16: bool | Literal["auto"] = hf(False, "bf16")
    """bfloat16 mixed precision; auto = bf16 where the device supports it, else float32."""
    fp16: bool = hf(False, "fp16")
    """float16 mixed precision (with a loss scaler)."""
    seed: int = hf(42, "seed")
    """Seed for data order, LoRA initialisation and dropout."""
    dataloader_num_workers: int = hf(0, "dataloader_num_workers")
    """Worker processes that build batches; 0 = in the training process."""
    ddp_find_unused_parameters: bool | None = hf(None, "ddp_find_unused_parameters")
    """DDP option; null = true for VLMs (text-only batches skip the projector)."""

    @field_validator("lr_scheduler_type")
    @classmethod
    def _scheduler(cls, v: str) -> str:
        if v not in SCHEDULERS:
            raise ValueError(unknown("scheduler", v, SCHEDULERS))
        return v

    def problems(self) -> list[str]:
        problems: list[str] = []
        add = problems.append
        if self.bf16 and self.fp16:
            add("bf16 / fp16: both are true; choose one mixed-precision mode")
        if self.learning_rate is not None and not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            add(f"learning_rate: must be a positive number (got {self.learning_rate})")
        for key, frozen in (("vision_tower_lr", "freeze_vision_tower"), ("projector_lr", "freeze_projector")):
            value = getattr(self, key)
            if value is None:
                continue
            if not (value > 0 and math.isfinite(value)):
                add(f"{key}: must be a positive number, or null for learning_rate (got {value})")
            elif getattr(self, frozen, False):  # read on the whole TrainConfig
                add(f"{key}: set, but {frozen} is true, so that part does not train; set {frozen}: false or "
                    f"remove {key}")
        if not 0 <= self.warmup_ratio < 1:
            add(f"warmup_ratio: must be in [0, 1) (got {self.warmup_ratio})")
        if self.warmup_steps < 0:
            add(f"warmup_steps: must be >= 0 (got {self.warmup_steps})")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            add("num_train_epochs: must be > 0 when max_steps is not set")
        problems += at_least_one(self, ("per_device_train_batch_size", "gradient_accumulation_steps"),
                                 ("per_device_eval_batch_size",))
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            add(f"max_grad_norm: must be > 0, or null to turn clipping off (got {self.max_grad_norm})")
        return problems
