"""The training config: one flat YAML with TRL / HF TrainingArguments / LLaMA-Factory key names.

`load_config("config.yaml", ["beta=0.2", "loss_type=[sigmoid,sft]"])` -> `TrainConfig`, or a
`ConfigError` whose message names the key, the problem and the fix (never a pydantic dump).
Defaults are chosen to work: LoRA r16/alpha32 on the language model, DPO (sigmoid) with beta 0.1,
learning rate 5e-5 for LoRA/QLoRA and 5e-6 for full fine-tuning when not given.
"""
from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from vlmdpo.errors import FixableError
from vlmdpo.losses import LOSS_TYPES, needs_reference

# transformers schedulers that need no extra arguments
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")
REPORT_TO = ("none", "tensorboard", "wandb")
LORA_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "lora_modules")
DEFAULT_LR = {"lora": 5e-5, "qlora": 5e-5, "full": 5e-6}


class ConfigError(FixableError):
    """A bad config: the message is meant for the user as is."""


class TrainConfig(BaseModel):
    # coerce_numbers_to_str: `output_dir=2024` on the command line is a folder name, not an error
    model_config = ConfigDict(extra="forbid", validate_default=True, protected_namespaces=(),
                              coerce_numbers_to_str=True)

    # model
    model_name_or_path: str | None = None  # HF id or folder, `tiny:<family>`, `builtin:nano-smolvlm`
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2", "flex_attention"] | None = None
    trust_remote_code: bool = False

    # data
    dataset: str | list[str] | None = None
    format: str = "auto"
    image_root: str | None = None
    allow_remote_images: bool = False
    on_invalid: Literal["error", "skip"] = "error"
    check_images: Literal["none", "header", "decode"] = "header"
    eval_dataset: str | list[str] | None = None
    test_dataset: str | list[str] | None = None  # held-out pairs for `vlmdpo eval` (never seen in training)
    val_size: float = 0.0  # fraction in (0, 1), or a whole number of pairs >= 1
    output_dir: str = "outputs/vlmdpo"

    # loss
    loss_type: str | list[str] = "sigmoid"
    loss_weights: list[float] | None = None
    beta: float = 0.1
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5
    ld_alpha: float | None = None
    rpo_alpha: float | None = None
    bco_running_mean: bool = True  # bco_pair's delta: running reward mean (BCO paper); False = 0 as TRL 1.16

    # what trains
    finetuning_type: Literal["lora", "qlora", "full"] = "lora"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target: str | list[str] = "all-linear"
    lora_modules: Literal["language_model", "all"] = "language_model"
    freeze_vision_tower: bool = True
    freeze_projector: bool = False
    freeze_language_model: bool = False

    # encoding
    image_max_pixels: int | None = None
    image_min_pixels: int | None = None
    max_length: int = 2048
    truncation: Literal["completions", "drop"] = "completions"

    # optimisation
    learning_rate: float | None = None  # None -> DEFAULT_LR[finetuning_type]
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.0
    warmup_steps: int = 0  # wins over warmup_ratio when > 0 (as in HF)
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    per_device_train_batch_size: int = 2
    per_device_eval_batch_size: int | None = None  # None -> per_device_train_batch_size
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    max_grad_norm: float | None = 1.0
    weight_decay: float = 0.0
    bf16: bool = False
    fp16: bool = False
    seed: int = 42
    dataloader_num_workers: int = 0
    ddp_find_unused_parameters: bool | None = None  # None -> True for VLMs (text-only batches skip the projector)

    # logging, eval, checkpoints
    logging_steps: int = 10
    eval_steps: int | None = None  # None -> evaluate at the end of each epoch (when there is eval data)
    save_steps: int | None = 500  # None -> only the final model
    save_total_limit: int | None = None
    early_stopping_patience: int | None = None  # evaluations without eval-loss improvement before stopping
    report_to: str | list[str] = "none"
    progress_bar: bool = True
    precompute_ref_log_probs: bool = False
    ref_cache_dir: str | None = None  # None -> <parent of output_dir>/.vlmdpo_ref_cache
    resume_from_checkpoint: str | None = None  # "auto" (latest in output_dir) or a checkpoint folder

    # fast paths: used when the model layer provides them and they apply; each is tested equal to the plain path
    share_vision: bool = True
    shared_prefix: bool = True
    completion_only_logits: bool = True
    padding_free: bool = False

    # ------------------------------------------------------------------ field checks
    @field_validator("loss_type")
    @classmethod
    def _loss_type(cls, v: str | list[str]) -> str | list[str]:
        names = [v] if isinstance(v, str) else v
        if not names:
            raise ValueError(f"is empty; use one or more of: {', '.join(LOSS_TYPES)}")
        for n in names:
            if n not in LOSS_TYPES:
                raise ValueError(f"unknown loss '{n}'{_suggest(n, LOSS_TYPES)}; valid: {', '.join(LOSS_TYPES)}")
        return v

    @field_validator("report_to")
    @classmethod
    def _report_to(cls, v: str | list[str]) -> list[str]:
        names = [v] if isinstance(v, str) else list(v)
        for n in names:
            if n not in REPORT_TO:
                raise ValueError(f"unknown tracker '{n}'; valid: {', '.join(REPORT_TO)}")
        return [n for n in names if n != "none"]

    @field_validator("lr_scheduler_type")
    @classmethod
    def _scheduler(cls, v: str) -> str:
        if v not in SCHEDULERS:
            raise ValueError(f"unknown scheduler '{v}'{_suggest(v, SCHEDULERS)}; valid: {', '.join(SCHEDULERS)}")
        return v

    @field_validator("resume_from_checkpoint", mode="before")
    @classmethod
    def _resume(cls, v: Any) -> Any:
        if v is True:
            return "auto"
        return None if v is False else v

    # ------------------------------------------------------------------ cross-field checks
    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        problems: list[str] = []
        add = problems.append
        if not self.model_name_or_path:
            add("model_name_or_path: missing; give a hub id, a local folder, or tiny:<family> / builtin:nano-smolvlm")
        if not self.dataset:
            add("dataset: missing; give a preference file, a folder, a hub dataset name, or a list of those")
        types = self.loss_types
        if not (self.beta > 0 and math.isfinite(self.beta)):
            add(f"beta: must be a positive number (got {self.beta}); 0.1 is the usual DPO value")
        if self.loss_weights is not None:
            if len(self.loss_weights) != len(types):
                add(f"loss_weights: {len(self.loss_weights)} weights for {len(types)} loss types {types}; "
                    "give one weight per loss_type entry")
            elif any(not math.isfinite(w) or w < 0 for w in self.loss_weights):
                add(f"loss_weights: must be finite and >= 0 (got {self.loss_weights})")
        if not 0 <= self.label_smoothing < 1:
            add(f"label_smoothing: must be in [0, 1) (got {self.label_smoothing})")
        if "robust" in types and not 0 <= self.label_smoothing < 0.5:
            add(f"label_smoothing: the robust loss needs it in [0, 0.5) (got {self.label_smoothing}); try 0.1")
        if "exo_pair" in types and self.label_smoothing <= 0:
            add("label_smoothing: the exo_pair loss needs it > 0 (it is EXO's epsilon); the paper uses 1e-3")
        if self.ld_alpha is not None and not 0 <= self.ld_alpha <= 1:
            add(f"ld_alpha: must be in [0, 1] (got {self.ld_alpha}); 1 is plain DPO")
        if self.rpo_alpha is not None and self.rpo_alpha < 0:
            add(f"rpo_alpha: must be >= 0 (got {self.rpo_alpha})")
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
        if self.val_size < 0 or (self.val_size >= 1 and self.val_size != int(self.val_size)):
            add(f"val_size: must be a fraction in [0, 1) or a whole number of pairs (got {self.val_size})")
        if self.val_size and self.eval_dataset:
            add("val_size: set either val_size (split off the training data) or eval_dataset, not both")
        if self.bf16 and self.fp16:
            add("bf16 / fp16: both are true; choose one mixed-precision mode")
        if self.learning_rate is not None and not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            add(f"learning_rate: must be a positive number (got {self.learning_rate})")
        if not 0 <= self.warmup_ratio < 1:
            add(f"warmup_ratio: must be in [0, 1) (got {self.warmup_ratio})")
        if self.warmup_steps < 0:
            add(f"warmup_steps: must be >= 0 (got {self.warmup_steps})")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            add("num_train_epochs: must be > 0 when max_steps is not set")
        for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "max_length"):
            if getattr(self, key) < 1:
                add(f"{key}: must be >= 1 (got {getattr(self, key)})")
        for key in ("per_device_eval_batch_size", "eval_steps", "save_steps", "save_total_limit",
                    "early_stopping_patience", "image_max_pixels", "image_min_pixels"):
            value = getattr(self, key)
            if value is not None and value < 1:
                add(f"{key}: must be >= 1 or left out (got {value})")
        if self.image_max_pixels and self.image_min_pixels and self.image_min_pixels > self.image_max_pixels:
            add(f"image_min_pixels: {self.image_min_pixels} is larger than image_max_pixels {self.image_max_pixels}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            add(f"max_grad_norm: must be > 0, or null to turn clipping off (got {self.max_grad_norm})")
        if self.early_stopping_patience and not self.has_eval_data:
            add("early_stopping_patience: needs evaluation data; set eval_dataset or val_size")
        if self.resume_from_checkpoint not in (None, "auto") and not Path(self.resume_from_checkpoint).is_dir():
            add(f"resume_from_checkpoint: folder '{self.resume_from_checkpoint}' does not exist; "
                "give a checkpoint folder or 'auto' (latest checkpoint in output_dir)")
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

    # ------------------------------------------------------------------ derived values
    @property
    def loss_types(self) -> list[str]:
        return [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)

    @property
    def needs_reference(self) -> bool:
        return needs_reference(self.loss_types)

    @property
    def has_eval_data(self) -> bool:
        return bool(self.eval_dataset) or self.val_size > 0

    @property
    def datasets(self) -> list[str]:
        return [self.dataset] if isinstance(self.dataset, str) else list(self.dataset or [])


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """`key=value` strings -> dict; values are YAML scalars or flow lists (`loss_type=[sigmoid,sft]`)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not key=value; write e.g. beta=0.2")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw  # a plain string that YAML would misread (e.g. a path with ': ')
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{path}' not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of key: value lines, got {type(data).__name__}")
    return data


def build_config(values: dict[str, Any], *, source: str = "config",
                 override_keys: Sequence[str] = ()) -> TrainConfig:
    """Validate a dict into a TrainConfig; every problem is listed in one ConfigError."""
    known = list(TrainConfig.model_fields)
    unknown = []
    for key in values:
        if key not in TrainConfig.model_fields:
            origin = "command-line override" if key in override_keys else source
            unknown.append(f"unknown key '{key}' in {origin}{_did_you_mean(str(key), known) or '; see examples/'}")
    if unknown:
        raise ConfigError("\n".join(unknown))
    try:
        return TrainConfig(**values)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] | dict[str, Any] = ()) -> TrainConfig:
    """YAML file (optional) + overrides (list of key=value, or a dict) -> TrainConfig."""
    values = read_yaml(path) if path is not None else {}
    extra = dict(overrides) if isinstance(overrides, dict) else parse_overrides(overrides)
    values.update(extra)
    source = str(path) if path is not None else "config"
    return build_config(values, source=source, override_keys=list(extra))


def _format_errors(err: ValidationError, source: str) -> str:
    lines: list[str] = []
    seen: set[str] = set()
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"]:  # cross-field checks: each line already starts with its key
            lines.extend(msg.splitlines())
            continue
        key = str(e["loc"][0])
        if e["type"] == "literal_error":
            msg = f"must be one of {e['ctx']['expected']}"
        elif e["type"] in {"bool_parsing", "int_parsing", "float_parsing", "string_type", "list_type",
                           "int_from_float", "bool_type", "int_type", "float_type"}:
            msg = f"{msg.lower()} (got {e['input']!r})"
        if key in seen:  # a union type reports each branch; one line per key is enough
            continue
        seen.add(key)
        lines.append(f"{key}: {msg}")
    return f"{source}: invalid config\n  " + "\n  ".join(lines)
