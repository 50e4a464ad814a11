"""Config keys: logging, evaluation, checkpoints and the reference log-prob cache."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator

from vlmdpo.config.base import Keys, at_least_one, hf, peer, unknown

REPORT_TO = ("none", "tensorboard", "wandb")
Strategy = Literal["no", "steps", "epoch"]
TRACKER_PACKAGE = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}
# what a checkpoint records of its run (train/fingerprint.py); `dataset` stands for the pairs themselves
FINGERPRINT_KEYS = (
    "model_name_or_path", "finetuning_type", "lora_rank", "lora_alpha", "lora_target", "lora_modules",
    "freeze_vision_tower", "freeze_projector", "freeze_language_model", "dataset", "seed",
    "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type",
    "warmup_steps", "warmup_ratio", "max_steps", "num_train_epochs", "loss_type", "loss_weights", "beta",
    "label_smoothing", "simpo_gamma", "ld_alpha", "rpo_alpha", "bco_running_mean", "vision_tower_lr", "projector_lr")
# the checkpoint's weights and optimizer state have the shape these give: they can never change on resume
# (a part's own learning rate gives it its own optimizer groups)
FIXED_ON_RESUME = ("model_name_or_path", "finetuning_type", "lora_rank", "lora_target", "lora_modules",
                   "freeze_vision_tower", "freeze_projector", "freeze_language_model", "vision_tower_lr",
                   "projector_lr")


class RunKeys(Keys):
    """Logging, evaluation and checkpoints."""

    logging_steps: int = hf(10, "logging_steps")
    """Optimizer steps between metric lines (console, metrics.jsonl, trackers)."""
    eval_strategy: Strategy | None = hf(None, "eval_strategy")
    """When to evaluate (when there is eval data): no (never, not even the final model), steps (every eval_steps), epoch (at each epoch end); null = steps when eval_steps is set, else epoch."""
    eval_steps: int | None = hf(None, "eval_steps")
    """Optimizer steps between evaluations; null = at the end of each epoch (when there is eval data), or every logging_steps with eval_strategy: steps."""
    save_strategy: Strategy | None = hf(None, "save_strategy")
    """When to write a checkpoint: no, steps (every save_steps), epoch (at each epoch end); null = steps when save_steps is set, else no."""
    save_steps: int | None = hf(500, "save_steps")
    """Optimizer steps between checkpoints; null = only the final model."""
    load_best_model_at_end: bool = hf(False, "load_best_model_at_end")
    """Keep the checkpoint with the best metric_for_best_model and end with its weights (needs eval data and save_strategy equal to eval_strategy)."""
    metric_for_best_model: str | None = hf(None, "metric_for_best_model")
    """Evaluation metric that picks the best checkpoint (and early stopping), e.g. eval_loss or eval_rewards/accuracies (the eval_ prefix may be left out); null = eval_loss."""
    greater_is_better: bool | None = hf(None, "greater_is_better")
    """Whether a higher metric_for_best_model is better; null = false for metrics ending in loss, else true."""
    save_total_limit: int | None = hf(None, "save_total_limit")
    """Most checkpoints kept (oldest deleted first); null = keep all."""
    early_stopping_patience: int | None = None
    """Evaluations without improvement of metric_for_best_model (eval_loss by default) before training stops; null = never stop early."""
    report_to: str | list[str] = hf("none", "report_to")
    """Experiment trackers: none, tensorboard, wandb, or a list."""
    progress_bar: bool = peer(True, trl="~disable_tqdm")
    """Show a progress bar while training."""
    precompute_ref_log_probs: bool = peer(False, trl="precompute_ref_log_probs")
    """Compute the reference log-probs once before training and cache them on disk (frees the reference model)."""
    ref_cache_dir: str | None = None
    """Folder of the reference log-prob cache; null = .vlmdpo_ref_cache beside output_dir."""
    resume_from_checkpoint: str | None = hf(None, "resume_from_checkpoint")
    """Continue a run: auto (or true) = the latest checkpoint in output_dir, or a checkpoint folder."""
    resume_allow_changes: list[str] = []
    """Settings that may differ from the checkpoint's run on resume, e.g. [learning_rate] after a NaN: applied and listed; any other difference (model, data, seed, batch, schedule, loss) is refused."""
    overwrite_output_dir: bool = hf(False, "overwrite_output_dir")
    """Train a new run into an output_dir that holds a previous run's files (its checkpoints of the same steps, metrics and model are replaced); without it (or resume_from_checkpoint) that is an error."""
    push_to_hub: bool = hf(False, "push_to_hub")
    """After training, upload the final model (adapter or full) with its model card to the hub repo hub_model_id (needs network and a token: HF_TOKEN or `hf auth login`)."""
    hub_model_id: str | None = hf(None, "hub_model_id")
    """Hub repo for push_to_hub, as owner/name (created if missing)."""

    @field_validator("report_to")
    @classmethod
    def _report_to(cls, v: str | list[str]) -> list[str]:
        names = [v] if isinstance(v, str) else list(v)
        for n in names:
            if n not in REPORT_TO:
                raise ValueError(unknown("tracker", n, REPORT_TO))
        return [n for n in names if n != "none"]

    @field_validator("resume_from_checkpoint", mode="before")
    @classmethod
    def _resume(cls, v: Any) -> Any:
        if v is True:
            return "auto"
        return None if v is False else v

    @field_validator("resume_allow_changes", mode="before")
    @classmethod
    def _allow(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @property
    def eval_when(self) -> str:
        """The evaluation strategy in effect: no, steps or epoch."""
        return self.eval_strategy or ("steps" if self.eval_steps else "epoch")

    @property
    def eval_every(self) -> int:
        """Optimizer steps between evaluations under eval_strategy: steps (HF falls back to logging_steps)."""
        return self.eval_steps or self.logging_steps

    @property
    def save_when(self) -> str:
        """The checkpoint strategy in effect: no, steps or epoch."""
        return self.save_strategy or ("steps" if self.save_steps else "no")

    @property
    def best_metric(self) -> str:
        """metric_for_best_model as logged (eval_ prefixed, as HF does)."""
        name = self.metric_for_best_model or "eval_loss"
        return name if name.startswith("eval_") else f"eval_{name}"

    @property
    def best_is_greater(self) -> bool:
        if self.greater_is_better is not None:
            return self.greater_is_better
        return not self.best_metric.endswith("loss")

    def problems(self) -> list[str]:
        problems = at_least_one(self, ("logging_steps",),
                                ("eval_steps", "save_steps", "save_total_limit", "early_stopping_patience"))
        if self.save_strategy == "steps" and not self.save_steps:
            problems.append("save_strategy: steps needs save_steps (a number of optimizer steps); "
                            "set save_steps, or save_strategy: epoch / no")
        if self.eval_strategy in ("steps", "epoch") and not getattr(self, "has_eval_data", True):
            problems.append(f"eval_strategy: {self.eval_strategy} needs evaluation data; set eval_dataset or "
                            "val_size, or eval_strategy: no")
        if self.load_best_model_at_end:
            problems += self._best_model_problems()
        for key in self.resume_allow_changes:
            if key in FIXED_ON_RESUME:
                problems.append(f"resume_allow_changes: {key} cannot change on resume (the checkpoint's weights "
                                "have the old shape); train it in a new output_dir")
            elif key not in FINGERPRINT_KEYS:
                problems.append(f"resume_allow_changes: {unknown('setting', key, FINGERPRINT_KEYS)}")
        for name in self.report_to:
            if not any(importlib.util.find_spec(m) for m in TRACKER_PACKAGE[name]):
                problems.append(f"report_to: {name} is not installed; pip install {TRACKER_PACKAGE[name][0]}, "
                                "or set report_to: none")
        if self.push_to_hub and not self.hub_model_id:
            problems.append("push_to_hub: needs hub_model_id (owner/name of the hub repo to upload to)")
        if self.resume_from_checkpoint not in (None, "auto") and not Path(self.resume_from_checkpoint).is_dir():
            problems.append(f"resume_from_checkpoint: folder '{self.resume_from_checkpoint}' does not exist; "
                            "give a checkpoint folder or 'auto' (latest checkpoint in output_dir)")
        return problems

    def _best_model_problems(self) -> list[str]:
        """HF's rule: the best model can only be restored from a checkpoint written at an evaluation."""
        if not getattr(self, "has_eval_data", True):
            return ["load_best_model_at_end: needs evaluation data; set eval_dataset or val_size"]
        ev, sv = self.eval_when, self.save_when
        if ev == "no":
            return ["load_best_model_at_end: needs evaluations; set eval_strategy (and save_strategy) to steps "
                    "or epoch"]
        if ev != sv:
            return [f"load_best_model_at_end: needs save_strategy equal to eval_strategy (save {sv}, eval {ev}); "
                    f"set save_strategy: {ev} and eval_strategy: {ev}" + (" with save_steps a multiple of "
                                                                         "eval_steps" if ev == "steps" else "")]
        if ev == "steps" and self.save_steps % self.eval_every:
            return [f"load_best_model_at_end: save_steps ({self.save_steps}) must be a multiple of eval_steps "
                    f"({self.eval_every}), so that every checkpoint has an evaluation"]
        return []
