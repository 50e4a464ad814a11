"""The training config: one flat YAML with TRL / HF TrainingArguments / LLaMA-Factory key names.

`load_config("config.yaml", ["beta=0.2", "loss_type=[sigmoid,sft]"])` -> `TrainConfig`, or a
`ConfigError` whose message names the key, the problem and the fix (never a pydantic dump).
Keys come in groups (model, data, loss, trainable, encoding, optim, run, fast), one module each,
with a one-line docstring per key; docs/CONFIG.md is generated from them (`python -m vlmdpo.config.doc`).
Defaults are chosen to work: LoRA r16/alpha32 on the language model, DPO (sigmoid) with beta 0.1,
learning rate 5e-5 for LoRA/QLoRA and 5e-6 for full fine-tuning when not given.
"""
from vlmdpo.config.load import ConfigError, build_config, load_config, parse_overrides, read_yaml
from vlmdpo.config.train_config import TrainConfig

__all__ = ["ConfigError", "TrainConfig", "build_config", "load_config", "parse_overrides", "read_yaml"]
