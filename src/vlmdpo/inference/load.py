"""Load a model for use: a LoRA adapter folder with its base, a full or merged folder, a tiny / builtin
name, or a hub name; and the policy for training (`load_for_training`, in `vlmdpo.inference.training`).

A `--model` value may be:
- a LoRA adapter folder (adapter_config.json): its base comes from the adapter config's
  `base_model_name_or_path`, else from the `vlmdpo_config.yaml` the training run wrote beside it;
- a full or merged model folder (config.json), loaded with plain transformers;
- a training checkpoint (`checkpoint-N`): the run's policy rebuilt, its tensors loaded (`checkpoint.py`);
- `tiny:<family>` / `builtin:<name>` (see `vlmdpo.inference.names`);
- a hub name (only where the hub is reachable).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlmdpo.errors import ModelLoadError
from vlmdpo.inference.checkpoint import apply_checkpoint, is_checkpoint
from vlmdpo.inference.names import build_named, is_named

TRAIN_CONFIG_FILE = "vlmdpo_config.yaml"


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelDirError(ModelLoadError):
    """A --model value that cannot be loaded; the message says what was expected and how to fix it."""

    sep = "\n  fix: "


@dataclass
class InferenceModel:
    model: Any  # a transformers model or a peft PeftModel, in eval mode
    processor: Any  # a ProcessorMixin for VLMs, a tokenizer for text-only models
    kind: str  # "adapter" | "checkpoint" | "full" | "named" | "hub"
    name: str  # what the user passed
    base_name: str | None = None  # for adapters: the base they sit on
    model_dir: Path | None = None
    train_config: dict[str, Any] = field(default_factory=dict)  # vlmdpo_config.yaml, when found

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def is_vlm(self) -> bool:
        return getattr(self.processor, "image_processor", None) is not None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def base_model(self):
        """The underlying transformers model (unwrapping peft)."""
        get = getattr(self.model, "get_base_model", None)
        return get() if get is not None else self.model


# ----------------------------------------------------------------------------- loading


def read_train_config(model_dir: Path) -> dict[str, Any]:
    """The training run's config, from the folder or its parent (checkpoint-N sits inside output_dir)."""
    import yaml

    for folder in (model_dir, model_dir.parent):
        path = folder / TRAIN_CONFIG_FILE
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError:
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def _model_like_subfolders(folder: Path) -> list[str]:
    found = []
    for sub in sorted(folder.iterdir()):
        if sub.is_dir() and ((sub / "adapter_config.json").is_file() or (sub / "config.json").is_file()):
            found.append(sub.name)
    return found


def _resolve_dtype(dtype: str | torch.dtype | None, device: str) -> Any:
    """`auto` keeps the saved dtype on an accelerator; on CPU half precision is slow, so it means float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return "auto" if device != "cpu" else torch.float32
    if dtype not in DTYPES:
        raise ModelDirError(f"unknown dtype {dtype!r}", "use one of auto, float32, bfloat16, float16")
    return DTYPES[dtype]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _looks_like_path(text: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else that does not exist is a mistyped path."""
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text


def from_pretrained(source: str, *, is_vlm: bool, trust_remote_code: bool, **kwargs) -> tuple[Any, Any]:
    """(model, processor) with the Auto classes: ImageTextToText + processor, or CausalLM + tokenizer."""
    import transformers as T

    auto = T.AutoModelForImageTextToText if is_vlm else T.AutoModelForCausalLM
    model = auto.from_pretrained(source, trust_remote_code=trust_remote_code, **kwargs)
    processor_class = T.AutoProcessor if is_vlm else T.AutoTokenizer
    return model, processor_class.from_pretrained(source, trust_remote_code=trust_remote_code)


def _load_plain(source: str, *, dtype: Any, trust_remote_code: bool) -> tuple[Any, Any]:
    """A full model folder or hub name, as a VLM whenever transformers can generate from it as one."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    is_vlm = type(config) in AutoModelForImageTextToText._model_mapping
    return from_pretrained(source, is_vlm=is_vlm, trust_remote_code=trust_remote_code, dtype=dtype)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _load_folder(path: Path, *, dtype: Any, trust_remote_code: bool) -> tuple[Any, Any]:
    try:
        return _load_plain(str(path), dtype=dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelDirError(
            f"{path}: cannot load the model in this folder ({_first_line(exc)})",
            "check it was written by save_pretrained / vlmdpo (config.json, weights, tokenizer files)") from None


def _load_processor_from(folder: Path, fallback: Any) -> Any:
    """Training saves the processor next to the adapter (chat template included); prefer that copy."""
    from transformers import AutoProcessor, AutoTokenizer

    if not (folder / "tokenizer_config.json").is_file():
        return fallback
    if getattr(fallback, "image_processor", None) is not None:
        return AutoProcessor.from_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


def _load_base(name: str, *, dtype: Any, trust_remote_code: bool) -> tuple[Any, Any, str]:
    if is_named(name):
        try:
            model, processor = build_named(name)
        except ModelLoadError as exc:  # a missing package or an unknown name: bad --model input, with a fix
            raise ModelDirError(exc.message, exc.fix) from None
        return model.to(dtype) if isinstance(dtype, torch.dtype) else model, processor, "named"
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelDirError(
                f"{path}: not a model folder (no config.json)",
                "point --model at a folder written by save_pretrained, a training output_dir, or an exported model",
            )
        model, processor = _load_folder(path, dtype=dtype, trust_remote_code=trust_remote_code)
        return model, processor, "full"
    if _looks_like_path(name):
        raise ModelDirError(f"{name}: no such model folder", "check the path (a training output_dir or an export)")
    try:
        model, processor = _load_plain(name, dtype=dtype, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - offline hub failures arrive as many exception types
        raise ModelDirError(
            f"{name}: no such folder, and loading it as a hub model failed ({_first_line(exc)})",
            "check the path; hub names need network access (or a local copy in the HF cache)",
        ) from None
    return model, processor, "hub"


def load_for_inference(
    name: str | Path,
    *,
    base: str | None = None,
    dtype: str | torch.dtype | None = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
) -> InferenceModel:
    """Load a base model, a LoRA adapter folder (with its base) or a merged model, ready to generate.

    `base` overrides the base model of an adapter (needed when the adapter does not record it).
    """
    device = device or default_device()
    torch_dtype = _resolve_dtype(dtype, device)
    text = str(name)
    path = Path(text).expanduser()
    if is_named(text) or not path.exists():
        model, processor, kind = _load_base(text, dtype=torch_dtype, trust_remote_code=trust_remote_code)
        return _finish(InferenceModel(model, processor, kind, text), device)
    if not path.is_dir():
        raise ModelDirError(f"{path}: is a file, not a model folder", "pass the folder that holds the model files")
    train_config = read_train_config(path)
    if is_checkpoint(path):
        return _finish(_load_checkpoint(path, base, train_config, dtype=torch_dtype,
                                        trust_remote_code=trust_remote_code), device)
    adapter_cfg = path / "adapter_config.json"
    if adapter_cfg.is_file():
        try:
            recorded = json.loads(adapter_cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
        except json.JSONDecodeError as exc:
            raise ModelDirError(f"{adapter_cfg}: invalid JSON ({exc})", "re-save the adapter") from None
        base_name = base or recorded or train_config.get("model_name_or_path")
        if not base_name:
            raise ModelDirError(
                f"{path}: LoRA adapter without a recorded base model (adapter_config.json has no "
                f"base_model_name_or_path and there is no {TRAIN_CONFIG_FILE})",
                "pass the base model explicitly (--base NAME_OR_DIR)",
            )
        if Path(str(base_name)).expanduser().resolve() == path.resolve():
            raise ModelDirError(f"{path}: the adapter names itself as its base", "pass --base with the real base model")
        source = "--base" if base else ("adapter_config.json" if recorded else TRAIN_CONFIG_FILE)
        try:
            base_model, base_processor, _ = _load_base(str(base_name), dtype=torch_dtype,
                                                       trust_remote_code=trust_remote_code)
        except ModelDirError as exc:
            raise ModelDirError(f"base model of the adapter in {path} (from {source}): {exc.message}",
                                exc.fix or "pass the base model explicitly (--base NAME_OR_DIR)") from None
        from peft import PeftModel

        from vlmdpo.model.prepare import quiet_peft_warnings

        try:
            with quiet_peft_warnings():
                model = PeftModel.from_pretrained(base_model, str(path))
        except (RuntimeError, ValueError, KeyError) as exc:  # size mismatch, unknown target modules, ...
            raise ModelDirError(
                f"{path}: the adapter does not fit its base {base_name} (from {source}): {_first_line(exc)}",
                "pass --base with the model the adapter was trained on") from None
        processor = _load_processor_from(path, base_processor)
        im = InferenceModel(model, processor, "adapter", text, str(base_name), path, train_config)
        return _finish(im, device)
    if (path / "config.json").is_file():
        model, processor = _load_folder(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
        return _finish(InferenceModel(model, processor, "full", text, None, path, train_config), device)
    inside = _model_like_subfolders(path)
    hint = f"this folder holds model subfolders: {', '.join(inside)}; pass one of them" if inside else (
        "pass a training output_dir (with adapter_config.json or config.json) or an exported model folder")
    raise ModelDirError(f"{path}: not a model folder (no adapter_config.json or config.json)", hint)


def _load_checkpoint(path: Path, base: str | None, train_config: dict[str, Any], *, dtype: Any,
                     trust_remote_code: bool) -> InferenceModel:
    """A checkpoint-N folder: the run's policy rebuilt on its base, with the checkpoint's tensors."""
    base_name = base or train_config.get("model_name_or_path")
    if not base_name:
        raise ModelDirError(f"{path}: a training checkpoint without the run's {TRAIN_CONFIG_FILE} beside it",
                            "pass --base with the model the run trained, or serve the run's output_dir")
    base_model, processor, _ = _load_base(str(base_name), dtype=dtype, trust_remote_code=trust_remote_code)
    try:
        model = apply_checkpoint(base_model, path, train_config)
    except ModelLoadError as exc:
        raise ModelDirError(exc.message, exc.fix) from None
    # the run saves its processor (chat template included) in output_dir, the checkpoint's parent
    processor = _load_processor_from(path.parent, processor)
    return InferenceModel(model, processor, "checkpoint", str(path), str(base_name), path, train_config)


def _finish(im: InferenceModel, device: str) -> InferenceModel:
    im.model.to(device)
    im.model.eval()
    return im


