"""A model card (README.md) for a trained model: base, usage, training config, data statistics, final
training metrics, eval results and the training curves, read from the files a run and `vlmdpo eval` leave."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmdpo.inference import TRAIN_CONFIG_FILE
from vlmdpo.inference.names import is_named

CURVES_FILE = "training_curves.png"
# what a training run (train_results.json, metrics.jsonl, skipped/dropped rows) and `vlmdpo eval` leave behind
TRAIN_RESULTS = "train_results.json"
EVAL_FILES = ("eval_results.json", "eval/eval_results.json")
DATA_FILES = ("data_stats.json",)
METRICS_FILE = "metrics.jsonl"
ROW_LOGS = {"rejected_rows.jsonl": "invalid rows skipped", "rejected_rows_eval.jsonl": "invalid eval rows skipped",
            "dropped_pairs.jsonl": "pairs dropped (too long)"}
DATA_KEYS = ("n_train_pairs", "n_eval_pairs", "dropped_pairs", "pairs_seen", "tokens_seen", "global_step",
             "stopped_early", "best_eval_loss")


def find_run_file(model_dir: Path | None, names: tuple[str, ...]) -> Path | None:
    """Training files sit in the model folder, or in its parent when a checkpoint-N is exported."""
    if model_dir is None:
        return None
    for folder in (model_dir, model_dir.parent):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def read_json(path: Path | None) -> Any:
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
    results = read_json(find_run_file(model_dir, (TRAIN_RESULTS,)))
    results = results if isinstance(results, dict) else {}
    data = {k: results[k] for k in DATA_KEYS if results.get(k) is not None}
    extra = read_json(find_run_file(model_dir, DATA_FILES))
    if isinstance(extra, dict):
        data.update(extra)
    for name, label in ROW_LOGS.items():
        n = _count_lines(find_run_file(model_dir, (name,)))
        if n is not None:
            data[label] = n
    train = results.get("train") if isinstance(results.get("train"), dict) else None
    train = train or last_metrics(find_run_file(model_dir, (METRICS_FILE,)))
    evals = read_json(find_run_file(model_dir, EVAL_FILES))
    if not isinstance(evals, dict) or not evals:
        evals = results.get("eval") if isinstance(results.get("eval"), dict) else {}
    return {"Data": data, "Final training metrics": train, "Evaluation": evals}


def card_text(*, name: str, base: str | None, train_config: dict[str, Any], is_vlm: bool, model_dir: Path | None,
              how: str, adapter: bool = False) -> str:
    """The README.md text; `adapter`: the folder is a LoRA adapter (loaded with peft on its base)."""
    import yaml

    from vlmdpo import __version__

    cfg = train_config
    losses = cfg.get("loss_type") or "sigmoid"
    losses = losses if isinstance(losses, list) else [losses]
    auto = "AutoModelForImageTextToText" if is_vlm else "AutoModelForCausalLM"
    proc = "AutoProcessor" if is_vlm else "AutoTokenizer"
    front: dict[str, Any] = {"library_name": "peft" if adapter else "transformers",
                             "tags": ["vlmdpo", "dpo", *map(str, losses)],
                             "pipeline_tag": "image-text-to-text" if is_vlm else "text-generation"}
    if base and not is_named(str(base)) and not str(base).startswith(("/", ".", "~")):
        front["base_model"] = str(base)  # a hub id; local paths mean nothing to readers of the card
    usage = [f"from transformers import {auto}, {proc}"]
    if adapter:
        usage += ["from peft import PeftModel", f'model = {auto}.from_pretrained("{base}")',
                  'model = PeftModel.from_pretrained(model, "PATH")']
    else:
        usage += [f'model = {auto}.from_pretrained("PATH")']
    usage += [f'processor = {proc}.from_pretrained("PATH")']
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {Path(name).name or name}", "",
             f"Preference-tuned with vlmdpo {__version__}: {how}.", "",
             "## Usage", "", "```python", *usage, "```", "", "## Training config", ""]
    if cfg:
        lines += ["```yaml", yaml.safe_dump(cfg, sort_keys=False).strip(), "```", ""]
    else:
        lines += [f"No {TRAIN_CONFIG_FILE} was found next to the model.", ""]
    for title, values in card_sections(model_dir).items():
        if values:
            lines += [f"## {title}", "", _table(values), ""]
        elif title == "Evaluation":
            lines += ["## Evaluation", "", "No eval results were found next to the model (run `vlmdpo eval`).", ""]
    if find_run_file(model_dir, (CURVES_FILE,)) is not None:
        lines += ["## Training curves", "", f"![training curves]({CURVES_FILE})", ""]
    return "\n".join(lines)
