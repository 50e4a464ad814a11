"""Models in use: the one model loader (training, eval, chat, compare, export, serving) and generation.

- `names`: `tiny:<family>` / `builtin:<name>`, resolved here only;
- `load`: an adapter folder with its base, a full or merged folder, a name, a hub id -> InferenceModel;
- `training`: `load_for_training(name, ...)` -> ModelBundle, the policy ready to train;
- `generate`: chat-template inputs (one conversation or a left-padded batch), stop tokens, greedy / sampled
  generation, streaming.
"""
from __future__ import annotations

from vlmdpo.errors import ModelLoadError
from vlmdpo.inference.generate import (GenerationSettings, generate, generate_ids, generate_rows, prepare_batch,
                                       prepare_inputs, stop_token_ids, user_message)
from vlmdpo.inference.load import (TRAIN_CONFIG_FILE, InferenceModel, ModelDirError, load_for_inference,
                                   read_train_config)
from vlmdpo.inference.training import ModelBundle, load_for_training

__all__ = ["GenerationSettings", "InferenceModel", "ModelBundle", "ModelDirError", "ModelLoadError",
           "TRAIN_CONFIG_FILE", "generate", "generate_ids", "generate_rows", "load_for_inference",
           "load_for_training", "prepare_batch", "prepare_inputs", "read_train_config", "stop_token_ids", "user_message"]
