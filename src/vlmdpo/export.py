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
from vlmdpo.inference.names import is_named

# what a training run (train_results.json, metrics.jsonl, skipped/dropped rows) and `vlmdpo eval` leave behind
TRAIN_RESULTS = "train_results.json"
EVAL_FILES = ("eval_results.json", "eval/eval_results.json")
DATA_FILES = ("data_stats.json",)
METRICS_FILE = "metrics.jsonl"
ROW_LOGS = {"rejected_rows.jsonl": "invalid rows skipped", "rejected_rows_eval.jsonl": "invalid eval rows skipped",
            "dropped_pairs.jsonl": "pairs dropped (too long)"}
DATA_KEYS = ("n_train_pairs", "n_eval_pairs", "dropped_pairs", "pairs_seen", "tokens_seen", "global_step",
             "stopped_early", "best_eval_loss")


@dataclass
class ExportResult:
    path: Path
    merged: bool  # False when the model was already a full model (nothing to merge)
    dtype: str
    base_name: str | None
    moved_aside: Path | None = None  # what --force found at `path` (not a previous export), kept here


def _find(model_dir: Path | None, names: tuple[str, ...]) -> Path | None:
    """Training files sit in the model folder, or in its parent when a checkpoint-N is exported."""
    if model_dir is None:
        return None
    for folder in (model_dir, model_dir.parent):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def _read_json(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def last_metrics(path: Path | None) -> dict[str, Any]:
    """The final train-side values from metrics.jsonl (each key's last logged value)."""
    if path is None:
        return {}
    last: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a run killed mid-write leaves a partial last line; the card is still useful
        if isinstance(row, dict):
            last.update({k: v for k, v in row.items() if isinstance(v, (int, float, str))})
    return last


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """One level of keys for a table: {"base": {"acc": 1}} -> {"base/acc": 1}."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "/"))
        elif value is not None:
            out[name] = value
    return out


def _table(values: dict[str, Any]) -> str:
    rows = ["| key | value |", "|---|---|"]
    for key, value in flatten(values).items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, list):
            value = json.dumps(value)
        rows.append(f"| {key} | {value} |")
    return "\n".join(rows)


def _count_lines(path: Path | None) -> int | None:
    if path is None:
        return None
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def card_sections(model_dir: Path | None) -> dict[str, dict[str, Any]]:
    """Data statistics, final training metrics and eval results found beside the model (empty when absent)."""
    results = _read_json(_find(model_dir, (TRAIN_RESULTS,)))
    results = results if isinstance(results, dict) else {}
    data = {k: results[k] for k in DATA_KEYS if results.get(k) is not None}
    extra = _read_json(_find(model_dir, DATA_FILES))
    if isinstance(extra, dict):
        data.update(extra)
    for name, label in ROW_LOGS.items():
        n = _count_lines(_find(model_dir, (name,)))
        if n is not None:
            data[label] = n
    train = results.get("train") if isinstance(results.get("train"), dict) else None
    train = train or last_metrics(_find(model_dir, (METRICS_FILE,)))
    evals = _read_json(_find(model_dir, EVAL_FILES))
    if not isinstance(evals, dict) or not evals:
        evals = results.get("eval") if isinstance(results.get("eval"), dict) else {}
    return {"Data": data, "Final training metrics": train, "Evaluation": evals}


def model_card(im: InferenceModel, *, merged: bool, dtype: str) -> str:
    """README.md: what the model is, how to load it, the training config, data statistics and eval results."""
    import yaml

    from vlmdpo import __version__

    cfg = im.train_config
    losses = cfg.get("loss_type") or "sigmoid"
    losses = losses if isinstance(losses, list) else [losses]
    auto = "AutoModelForImageTextToText" if im.is_vlm else "AutoModelForCausalLM"
    proc = "AutoProcessor" if im.is_vlm else "AutoTokenizer"
    base = im.base_name or cfg.get("model_name_or_path") or im.name
    front = {"library_name": "transformers", "tags": ["vlmdpo", "dpo", *map(str, losses)],
             "pipeline_tag": "image-text-to-text" if im.is_vlm else "text-generation"}
    if base and not is_named(str(base)) and not str(base).startswith(("/", ".", "~")):
        front["base_model"] = str(base)  # a hub id; local paths mean nothing to readers of the card
    how = f"LoRA adapter `{im.name}` merged into `{base}`" if merged else f"full model `{im.name}`"
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {Path(str(im.name)).name or im.name}", "",
             f"Preference-tuned with vlmdpo {__version__}: {how}, saved in {dtype}.", "",
             "## Usage", "", "```python", f"from transformers import {auto}, {proc}",
             f'model = {auto}.from_pretrained("PATH")', f'processor = {proc}.from_pretrained("PATH")', "```", "",
             "## Training config", ""]
    if cfg:
        lines += ["```yaml", yaml.safe_dump(cfg, sort_keys=False).strip(), "```", ""]
    else:
        lines += [f"No {TRAIN_CONFIG_FILE} was found next to the model.", ""]
    for title, values in card_sections(im.model_dir).items():
        if values:
            lines += [f"## {title}", "", _table(values), ""]
        elif title == "Evaluation":
            lines += ["## Evaluation", "", "No eval results were found next to the model (run `vlmdpo eval`).", ""]
    return "\n".join(lines)


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
    data = _read_json(Path(name) / "config.json") or {}
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
    listed = _read_json(out / MANIFEST) if out.is_dir() else None
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
    saved = _saved_dtype_of(im.base_name if im.kind == "adapter" else (str(im.model_dir) if im.model_dir else None))
    target = target_dtype(dtype, im.train_config, saved)
    merged = im.kind == "adapter"
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
        if (im.model_dir is not None) and (_find(im.model_dir, (TRAIN_CONFIG_FILE,)) is not None):
            shutil.copyfile(_find(im.model_dir, (TRAIN_CONFIG_FILE,)), tmp / TRAIN_CONFIG_FILE)
        written = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        (tmp / MANIFEST).write_text(json.dumps(written, indent=1), encoding="utf-8")
        sync_tree(tmp)
        aside = _set_aside(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, merged, dtype_name, im.base_name, aside)
