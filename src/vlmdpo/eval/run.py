"""`vlmdpo eval`: base vs tuned on held-out pairs -> eval.json, answers.jsonl, report.html.

For each model, in turn (so only one is in memory): encode the held-out pairs as training did,
score chosen and rejected (log-probs), and answer each prompt greedily. The base model's
log-probs are the reference for the tuned model's implicit rewards. Answers are graded
against the pair's ground truth where it has one (demo data).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from vlmdpo.errors import FixableError
from vlmdpo.eval.generate import generate_answers, grade_answers, grounded_accuracy, truth_of
from vlmdpo.eval.preference import encode_records, pair_logps, preference_metrics
from vlmdpo.eval.report import Example, write_report

# Quickstart targets (issue 4): held-out reward accuracy of the tuned model, and how many
# points its grounded-answer accuracy must gain over the base.
TARGET_REWARD_ACCURACY = 0.90
TARGET_GROUNDED_GAIN = 0.30


class EvalError(FixableError):
    """Evaluation cannot run as asked; the message says what to pass instead."""


@dataclass
class EvalResult:
    output_dir: Path
    summary: dict[str, Any]
    report_path: Path
    answers_path: Path
    dropped: list[Any] = field(default_factory=list)


def _say_default(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def resolve_eval_config(config: Any = None, overrides: Sequence[str] | dict[str, Any] = (), model: str | None = None):
    """The TrainConfig that describes the run: the given YAML/object, else the one saved beside --model."""
    from vlmdpo.api import resolve_config
    from vlmdpo.config import build_config, parse_overrides
    from vlmdpo.inference import read_train_config

    extra = dict(overrides) if isinstance(overrides, dict) else parse_overrides(overrides)
    if config is not None:
        return resolve_config(config, **extra)
    if model is None:
        raise EvalError("nothing to evaluate: pass a training config (vlmdpo eval config.yaml) or --model DIR")
    saved = read_train_config(Path(model).expanduser())
    if not saved:
        raise EvalError(f"{model}: no vlmdpo_config.yaml beside the model, so the data and base are unknown; "
                        "pass the training config too (vlmdpo eval config.yaml --model DIR)")
    return build_config({**saved, **extra}, source=f"{model}/vlmdpo_config.yaml", override_keys=list(extra))


def _test_source(cfg, dataset: str | None, say) -> Any:
    if dataset:
        return dataset
    test = getattr(cfg, "test_dataset", None)
    if test:
        return test[0] if isinstance(test, list) and len(test) == 1 else test
    if cfg.eval_dataset:
        say("note: no test_dataset in the config; evaluating on eval_dataset, which training used for "
            "evaluation curves (set test_dataset for truly held-out numbers)")
        return cfg.eval_dataset[0] if isinstance(cfg.eval_dataset, list) and len(cfg.eval_dataset) == 1 \
            else cfg.eval_dataset
    raise EvalError("no held-out data: set test_dataset (or eval_dataset) in the config, or pass --dataset PATH")


def _score_model(im, records, cfg, *, label: str, do_generate: bool, max_new_tokens: int, batch_size: int,
                 progress: bool) -> dict[str, Any]:
    """Encode, score and (optionally) answer every record with one loaded model."""
    from tqdm.auto import tqdm

    from vlmdpo.encode import encode_pair
    from vlmdpo.model.families import adapter_for

    base_model = im.base_model
    family = adapter_for(base_model)
    tokenizer = im.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encode = partial(encode_pair, processor=im.processor, family=family, max_length=cfg.max_length,
                     truncation=cfg.truncation, image_max_pixels=cfg.image_max_pixels,
                     image_min_pixels=cfg.image_min_pixels,
                     video_fps=cfg.video_fps, video_max_frames=cfg.video_max_frames, video_max_pixels=cfg.video_max_pixels)
    pairs, kept, dropped = encode_records(records, encode)
    if not pairs:
        raise EvalError(f"{label}: none of the {len(records)} held-out pairs could be encoded; first reason: "
                        f"{dropped[0] if dropped else 'empty data'}")
    total = len(pairs) * (2 if do_generate else 1)
    bar = tqdm(total=total, desc=f"eval {label}", unit="pair", disable=not progress, dynamic_ncols=True)
    try:
        logps = pair_logps(im.model, pairs, family=family, pad_token_id=pad, batch_size=batch_size,
                           on_batch=bar.update)
        answers = None
        if do_generate:
            answers = generate_answers(im.model, tokenizer, pairs, family=family, pad_token_id=pad,
                                       max_new_tokens=max_new_tokens, batch_size=batch_size, on_batch=bar.update)
    finally:
        bar.close()
    return {"kept": kept, "dropped": dropped, "logps": logps, "answers": answers}


def _targets(models: dict[str, Any]) -> list[dict[str, Any]]:
    tuned, base = models.get("tuned") or {}, models.get("base") or {}
    out = []
    acc = (tuned.get("preference") or {}).get("reward_accuracy")
    if isinstance(acc, float) and not math.isnan(acc):
        out.append({"name": "tuned held-out reward accuracy", "value": f"{100 * acc:.1f}%",
                    "target": f">= {100 * TARGET_REWARD_ACCURACY:.0f}%", "met": acc >= TARGET_REWARD_ACCURACY})
    g_t = (tuned.get("grounded") or {}).get("accuracy")
    g_b = (base.get("grounded") or {}).get("accuracy")
    if all(isinstance(v, float) and not math.isnan(v) for v in (g_t, g_b)):
        gain = g_t - g_b
        out.append({"name": "grounded-answer accuracy gain (tuned - base)", "value": f"{100 * gain:+.1f} points",
                    "target": f">= +{100 * TARGET_GROUNDED_GAIN:.0f} points", "met": gain >= TARGET_GROUNDED_GAIN})
    return out


def format_summary(summary: dict[str, Any]) -> str:
    from vlmdpo.eval.report import summary_rows

    models = summary["models"]
    rows = summary_rows(models)
    width = max(len(r[0]) for r in rows) + 2
    lines = ["".ljust(width) + "".join(n.rjust(10) for n in models)]
    lines += [label.ljust(width) + "".join(v.rjust(10) for v in values) for label, values in rows]
    for t in summary.get("targets", []):
        lines.append(f"target: {t['name']}: {t['value']} (want {t['target']}) -> {'met' if t['met'] else 'NOT met'}")
    return "\n".join(lines)


def run_eval(config: Any = None, *, overrides: Sequence[str] | dict[str, Any] = (), model: str | None = None,
             base: str | None = None, dataset: str | None = None, output: str | None = None,
             generate: bool = True, max_new_tokens: int = 24, batch_size: int = 16, n_examples: int = 12,
             device: str | None = None, progress: bool = True, echo: Callable[[str], None] | None = None,
             scores: dict[tuple, dict[str, Any]] | None = None) -> EvalResult:
    """Evaluate the base and the tuned model on held-out pairs and write the report.

    config: a training YAML / TrainConfig / dict (its output_dir is the tuned model, its
    model_name_or_path the base, its test_dataset the data); `model`, `base`, `dataset` override those.
    scores: a dict shared by calls with one config (iterate's rounds all compare against the same base):
    a model already scored on these pairs with these settings is not loaded and scored again.
    """
    from vlmdpo.card import find_run_file
    from vlmdpo.data.load import load_preferences
    from vlmdpo.inference import load_for_inference
    from vlmdpo.train.metrics import read_metrics

    say = echo or _say_default
    cfg = resolve_eval_config(config, overrides, model)
    model_dir = Path(model or cfg.output_dir).expanduser()
    base_name = base or cfg.model_name_or_path
    if not base_name:
        raise EvalError("the base model is unknown: set model_name_or_path in the config or pass --base")
    source = _test_source(cfg, dataset, say)
    out = Path(output).expanduser() if output else model_dir / "eval"

    res = load_preferences(source, format=cfg.format, image_root=cfg.image_root, image_path_map=cfg.image_path_map,
                           allow_remote_images=cfg.allow_remote_images, on_invalid=cfg.on_invalid,
                           check_images=cfg.check_images)
    records = res.records
    say(f"held-out data: {res.summary()}")
    if not records:
        raise EvalError(f"no valid held-out pairs in {source}")

    scored: dict[str, dict[str, Any]] = {}
    known = {} if scores is None else scores  # the start evaluated against itself is scored once
    for label, name in (("base", base_name), ("tuned", str(model_dir))):
        key = (str(name), str(source), generate, max_new_tokens, batch_size)
        if key in known:
            say(f"the {label} model: {name}: scored already, not again")
            scored[label] = known[key]
            continue
        say(f"loading the {label} model: {name}")
        im = load_for_inference(name, dtype=cfg.dtype, device=device)
        scored[label] = known[key] = _score_model(im, records, cfg, label=label, do_generate=generate,
                                                  max_new_tokens=max_new_tokens, batch_size=batch_size,
                                                  progress=progress)
        del im

    # only pairs both models could encode are compared
    common = sorted(set(scored["base"]["kept"]) & set(scored["tuned"]["kept"]))
    recs = [records[i] for i in common]
    kinds = [truth_of(r)[0] for r in recs]
    groups = kinds if all(k is not None for k in kinds) else None

    def pick(label: str, values):
        pos = {rec_i: j for j, rec_i in enumerate(scored[label]["kept"])}
        return [values[pos[i]] for i in common]

    import torch

    from vlmdpo.types import LogpPair

    def logps_of(label: str) -> LogpPair:
        lp = scored[label]["logps"]
        idx = torch.tensor(pick(label, list(range(len(scored[label]["kept"])))), dtype=torch.long)
        return LogpPair(lp.chosen_logps[idx], lp.rejected_logps[idx], lp.chosen_lengths[idx], lp.rejected_lengths[idx])

    ref = logps_of("base")
    models: dict[str, Any] = {}
    graded: dict[str, list] = {}
    for label in ("base", "tuned"):
        entry: dict[str, Any] = {"preference": preference_metrics(logps_of(label), ref, beta=cfg.beta, groups=groups)}
        if generate:
            graded[label] = grade_answers(recs, pick(label, scored[label]["answers"]))
            entry["grounded"] = grounded_accuracy(graded[label])
        models[label] = entry
    dropped = scored["base"]["dropped"] + scored["tuned"]["dropped"]
    summary = {
        "models": models,
        "settings": {"base model": base_name, "tuned model": str(model_dir), "held-out data": str(source),
                     "pairs compared": len(common), "pairs dropped": len(dropped), "beta": cfg.beta,
                     "decoding": f"greedy, max {max_new_tokens} new tokens" if generate else "not run"},
        "targets": _targets(models),
    }

    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    answers_path = out / "answers.jsonl"
    with answers_path.open("w", encoding="utf-8") as fh:
        for j, rec in enumerate(recs):
            kind, truth = truth_of(rec)
            row: dict[str, Any] = {"id": rec.id, "kind": kind, "truth": truth}
            for label in ("base", "tuned"):
                lp = logps_of(label)
                row[f"{label}_logp_chosen"] = round(float(lp.chosen_logps[j]), 5)
                row[f"{label}_logp_rejected"] = round(float(lp.rejected_logps[j]), 5)
                if generate:
                    row[f"{label}_answer"] = graded[label][j].answer
                    row[f"{label}_correct"] = graded[label][j].correct
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    examples = _examples(recs, graded, n_examples) if generate else []
    # a checkpoint-N's run log is in its parent, the output_dir
    metrics_rows = read_metrics(find_run_file(model_dir, ("metrics.jsonl",)) or model_dir / "metrics.jsonl")
    report = write_report(out, summary=summary, metrics_rows=metrics_rows, examples=examples,
                          title=f"vlmdpo eval: {model_dir.name} vs {base_name}")
    say(f"wrote {report} (and eval.json, answers.jsonl)")
    return EvalResult(out, summary, report, answers_path, dropped)


def _examples(recs, graded: dict[str, list], n: int) -> list[Example]:
    from vlmdpo.data.images import load_image

    out = []
    for j, rec in enumerate(recs):
        if len(out) >= n:
            break
        if not rec.images:
            continue
        question = " ".join(p.get("text", "") for m in rec.prompt if m.get("role") == "user"
                            for p in m.get("content", []) if p.get("type") == "text").strip()
        kind, truth = truth_of(rec)
        out.append(Example(image=load_image(rec.images[0]), question=question, truth=truth, kind=kind,
                           answers={k: v[j].answer for k, v in graded.items()},
                           correct={k: v[j].correct for k, v in graded.items()}))
    return out
