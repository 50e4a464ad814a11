"""`vlmdpo export`: merge a LoRA adapter into its base and save a plain Hugging Face model folder.

The folder (safetensors weights, config, processor with chat template, generation config, README
model card) loads with `AutoModelForImageTextToText.from_pretrained` (or `AutoModelForCausalLM` for
text-only models) without vlmdpo or peft. Merging happens in float32 so the exported model's greedy
tokens match the unmerged adapter's; the weights are then saved in the requested dtype.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmdpo.atomic import sync_tree
from vlmdpo.inference import TRAIN_CONFIG_FILE, InferenceModel, ModelDirError, load_for_inference, stop_token_ids
from vlmdpo.card import CURVES_FILE, card_text, find_run_file, read_json

@dataclass
class ExportResult:
    path: Path
    merged: bool  # False when the model was already a full model (nothing to merge)
    dtype: str
    base_name: str | None
    moved_aside: Path | None = None  # what --force found at `path` (not a previous export), kept here


def model_card(im: InferenceModel, *, merged: bool, dtype: str) -> str:
    """README.md: what the model is, how to load it, the training config, data statistics and eval results."""
    base = im.base_name or im.train_config.get("model_name_or_path") or im.name
    how = f"LoRA adapter `{im.name}` merged into `{base}`" if merged else f"full model `{im.name}`"
    return card_text(name=str(im.name), base=base, train_config=im.train_config, is_vlm=im.is_vlm,
                     model_dir=im.model_dir, how=f"{how}, saved in {dtype}")


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def target_dtype(dtype: str, train_config: dict[str, Any], saved: str | None) -> torch.dtype:
    """`auto`: the dtype training ran in, else the base checkpoint's saved dtype, else float32."""
    if dtype != "auto":
        if dtype not in _DTYPES:
            raise ModelDirError(f"unknown dtype {dtype!r}", "use one of auto, float32, bfloat16, float16")
        return _DTYPES[dtype]
    trained = train_config.get("dtype")
    if trained in _DTYPES:
        return _DTYPES[trained]
    return _DTYPES.get(str(saved), torch.float32)


def _saved_dtype_of(name: str | None) -> str | None:
    """The dtype recorded in a local base model's config.json (float32 loading overwrites it in memory)."""
    if not name or not (Path(name) / "config.json").is_file():
        return None
    data = read_json(Path(name) / "config.json") or {}
    return data.get("dtype") or data.get("torch_dtype")


MANIFEST = ".vlmdpo_export.json"  # the files an export wrote: the only ones a later --force may remove


def _fresh_output(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise ModelDirError(f"{out}: already exists and is not empty", "choose another -o folder or pass --force")


def _refuse_inputs_inside(out: Path, inputs: list[Path]) -> None:
    """An output folder that is, or contains, a folder the export reads would be replaced with it."""
    target = out.resolve()
    for src in inputs:
        src = src.resolve()
        if src == target or target in src.parents:
            raise ModelDirError(f"-o {out}: {'is' if src == target else 'contains'} the input {src}",
                                "choose a new, separate output folder (not the model folder or a folder above it)")


def _local_inputs(*names: str | Path | None) -> list[Path]:
    return [Path(n).expanduser() for n in names if n and Path(str(n)).expanduser().exists()]


def _set_aside(out: Path) -> Path | None:
    """Make room for the new export without deleting what we did not write: a previous export's files
    (listed in its manifest) are removed; anything else is moved to a sibling `<out>.replaced-N`."""
    if not out.exists():
        return None
    listed = read_json(out / MANIFEST) if out.is_dir() else None
    if isinstance(listed, list) and out.is_dir():
        mine = {out / name for name in listed} | {out / MANIFEST}
        if all(p in mine for p in out.rglob("*") if p.is_file()):
            shutil.rmtree(out)
            return None
    n = 1
    while out.with_name(f"{out.name}.replaced-{n}").exists():
        n += 1
    aside = out.with_name(f"{out.name}.replaced-{n}")
    os.replace(out, aside)
    return aside


def export_model(model: str, out: str | Path, *, base: str | None = None, dtype: str = "auto",
                 force: bool = False, device: str | None = "cpu") -> ExportResult:
    """Merge (when an adapter) and save a plain HF folder at `out`; written to a temp folder, then moved."""
    out = Path(out).expanduser().resolve()
    if out == Path.cwd() or out in Path.cwd().parents:
        raise ModelDirError(f"-o {out}: is the current folder or a folder above it",
                            "choose a new, separate output folder")
    if dtype != "auto" and dtype not in _DTYPES:
        raise ModelDirError(f"unknown dtype {dtype!r}", "use one of auto, float32, bfloat16, float16")
    _fresh_output(out, force)
    _refuse_inputs_inside(out, _local_inputs(model, base))
    im = load_for_inference(model, base=base, dtype=torch.float32, device=device)
    _refuse_inputs_inside(out, _local_inputs(im.model_dir, im.base_name))
    on_base = im.kind in ("adapter", "checkpoint")  # a checkpoint's tensors sit on its run's base
    saved = _saved_dtype_of(im.base_name if on_base else (str(im.model_dir) if im.model_dir else None))
    target = target_dtype(dtype, im.train_config, saved)
    merged = hasattr(im.model, "merge_and_unload")  # LoRA (an adapter, or a LoRA run's checkpoint)
    plain = im.model.merge_and_unload() if merged else im.model
    plain = plain.to(target)
    # the end-of-turn token must stop generation in plain transformers too, not only in vlmdpo chat
    gen = plain.generation_config
    stops = stop_token_ids(im.model, im.tokenizer)
    if stops:
        gen.eos_token_id = stops[0] if len(stops) == 1 else stops
    if gen.pad_token_id is None and im.tokenizer.pad_token_id is not None:
        gen.pad_token_id = im.tokenizer.pad_token_id
    plain.config.name_or_path = str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        plain.save_pretrained(str(tmp), safe_serialization=True)
        im.processor.save_pretrained(str(tmp))
        dtype_name = str(target).replace("torch.", "")
        (tmp / "README.md").write_text(model_card(im, merged=merged, dtype=dtype_name), encoding="utf-8")
        for name in (TRAIN_CONFIG_FILE, CURVES_FILE):  # the card shows the curves image beside it
            found = find_run_file(im.model_dir, (name,))
            if found is not None:
                shutil.copyfile(found, tmp / name)
        written = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        (tmp / MANIFEST).write_text(json.dumps(written, indent=1), encoding="utf-8")
        sync_tree(tmp)
        aside = _set_aside(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, merged, dtype_name, im.base_name, aside)
