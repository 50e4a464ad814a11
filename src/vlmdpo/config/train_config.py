"""`TrainConfig`: every config group in one flat model, plus the checks that span groups."""
from __future__ import annotations

from pydantic import model_validator

from vlmdpo.config.data import DataKeys
from vlmdpo.config.encoding import EncodingKeys
from vlmdpo.config.fast import FastKeys
from vlmdpo.config.loss import LossKeys
from vlmdpo.config.model import ModelKeys
from vlmdpo.config.optim import DEFAULT_LR, OptimKeys
from vlmdpo.config.run import RunKeys
from vlmdpo.config.trainable import TrainableKeys

# In the order the keys are listed (docs, saved configs, error messages).
GROUPS = (ModelKeys, DataKeys, LossKeys, TrainableKeys, EncodingKeys, OptimKeys, RunKeys, FastKeys)


# pydantic lists the fields of the last base class first, hence the reversed order.
class TrainConfig(FastKeys, RunKeys, OptimKeys, EncodingKeys, TrainableKeys, LossKeys, DataKeys, ModelKeys):
    """The training config: one flat YAML with TRL / HF TrainingArguments / LLaMA-Factory key names."""

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        problems = [line for group in GROUPS for line in group.problems(self)]
        if self.early_stopping_patience and not self.has_eval_data:
            problems.append("early_stopping_patience: needs evaluation data; set eval_dataset or val_size")
        if self.eval_steps and not self.has_eval_data:
            problems.append(f"eval_steps: {self.eval_steps} but there is no evaluation data; set eval_dataset or "
                            "val_size, or remove eval_steps")
        if problems:
            raise ValueError("\n".join(problems))
        # Derived defaults are filled in but not marked as set by the user, so that
        # model_dump(exclude_unset=True) + a new finetuning_type derives them again.
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LR[self.finetuning_type]
            self.__pydantic_fields_set__.discard("learning_rate")
        if self.per_device_eval_batch_size is None:
            self.per_device_eval_batch_size = self.per_device_train_batch_size
            self.__pydantic_fields_set__.discard("per_device_eval_batch_size")
        return self
