"""`vlmdpo iterate CONFIG --rounds R`: on-policy DPO, round after round.

Round 0 evaluates the starting model (model_name_or_path) on the held-out pairs. Round r then, in
<output_dir>/round-<r>/: samples num_generations answers per prompt from the current policy
(candidates.jsonl), judges them (scored.jsonl), makes pairs (pairs.jsonl), trains a run there starting
from the current policy with the chosen reference (`iterate_train.py`), and evaluates it (eval/).
A finished round writes round.json; the record (rounds.jsonl, rounds.md, rounds.png) is rewritten
from those. Rerunning resumes: finished rounds are skipped, and a cut round continues its step
(the JSONL steps skip rows already written; training resumes from its last checkpoint).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from vlmdpo.engine.iterate_train import round_dir, round_start, train_round
from vlmdpo.errors import FixableError

ROUND_FILE = "round.json"
# settings every round of one output_dir must share (rounds made otherwise are not one experiment)
SHARED = ("model_name_or_path", "iterate_reference", "finetuning_type")


@dataclass
class IterateResult:
    output_dir: Path
    rounds: list[dict[str, Any]]

    def table(self) -> str:
        from vlmdpo.engine.rounds import text_table

        return text_table(self.rounds)


class RoundClock:
    """Seconds spent on a round over every run that worked on it: saved after each step, so a cut round's
    finished steps still count when it resumes."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.before = float(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.before = 0.0
        self.began = time.monotonic()

    def seconds(self) -> float:
        return round(self.before + time.monotonic() - self.began, 1)

    def save(self) -> None:
        from vlmdpo.atomic import write_text

        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.path, f"{self.seconds()}\n")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def data_options(cfg: Any) -> dict[str, Any]:
    """How the config's data files are read (the keys training reads them with)."""
    return {"format": cfg.format, "image_root": cfg.image_root, "image_path_map": cfg.image_path_map,
            "allow_remote_images": cfg.allow_remote_images, "dataset_dir": cfg.dataset_dir,
            "max_samples": cfg.max_samples, "check_images": cfg.check_images}


def _lazy_answerer(name: str, options: Any, cfg: Any, device: str | None):
    """Loads the policy on the first prompt that needs an answer (a finished file loads nothing)."""
    from vlmdpo.engine.sample import model_answerer

    loaded: dict[str, Any] = {}

    def answer(rows: list[dict[str, Any]], images: list[list], seeds: list[int]) -> list[list[str]]:
        if "fn" not in loaded:
            from vlmdpo.inference import load_for_inference

            loaded["fn"] = model_answerer(load_for_inference(name, dtype=cfg.dtype, device=device), options)
        return loaded["fn"](rows, images, seeds)

    return answer


def _recorded_base(name: str) -> str:
    from vlmdpo.inference import read_train_config

    path = Path(name).expanduser()
    adapter = path / "adapter_config.json"
    base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path") if adapter.is_file() else None
    base = base or (read_train_config(path).get("model_name_or_path") if path.is_dir() else None)
    if not base:
        raise FixableError(f"judge_model: {name} records no base model", "set judge_base to its reference model")
    return str(base)


def labels_path(cfg: Any, r: int) -> Path:
    return Path(cfg.labels_file.replace("{round}", str(r))) if cfg.labels_file else \
        round_dir(cfg.output_dir, r) / "labels.jsonl"


def scorer_for(cfg: Any, r: int, candidates: Path, device: str | None = None):
    """The round's judge, as `vlmdpo judge --by <cfg.judge>` builds it."""
    from vlmdpo.engine import judge

    if cfg.judge == "truth":
        return judge.truth_scorer(cfg.truth_match)
    if cfg.judge == "model":
        ask = judge.judge_ask(cfg.judge_model, cfg.judge_endpoint, max_new_tokens=256, device=device)
        return judge.model_scorer(ask, judge.read_rubric(cfg.judge_rubric), by=cfg.judge_endpoint or cfg.judge_model)
    if cfg.judge == "implicit":
        from vlmdpo.engine.judge_implicit import ImplicitJudge

        return ImplicitJudge(cfg.judge_model, cfg.judge_base or _recorded_base(cfg.judge_model), beta=cfg.beta,
                             max_length=cfg.max_length or 2048, device=device)
    labels = labels_path(cfg, r)
    if not labels.is_file():
        raise FixableError(f"round {r}: waiting for labels: {labels} does not exist yet",
                           f"label {candidates} in the studio's label page (saving to {labels}), then rerun the "
                           "same command to continue")
    from vlmdpo.engine.judge_labels import LabelsScorer

    return LabelsScorer(labels, candidates)


def held_out_metrics(cfg: Any, model: str, base: str, out: Path, *, progress: bool, say,
                     scores: dict | None = None) -> dict[str, Any]:
    """Reward accuracy of `model` against `base` and grounded accuracy, on the held-out pairs (eval/run.py);
    `scores` keeps the models scored so far in this run (every round is compared with the same start)."""
    if not cfg.held_out:
        return {}
    eval_json = out / "eval.json"
    try:  # eval writes eval.json first: a run cut after it has the numbers
        summary = json.loads(eval_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        from vlmdpo.eval.run import run_eval

        summary = run_eval(cfg, model=model, base=base, dataset=cfg.held_out, output=str(out), progress=progress,
                           echo=say, scores=scores).summary
    tuned = summary["models"]["tuned"]
    pref, grounded = tuned.get("preference") or {}, tuned.get("grounded") or {}
    same = model == base  # round 0: the start against itself has no reward to measure

    def number(value: Any) -> float | None:  # NaN (nothing to grade) is null in rounds.jsonl
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    return {"reward_accuracy": None if same else number(pref.get("reward_accuracy")),
            "reward_margin": None if same else number(pref.get("reward_margin")),
            "logp_accuracy": number(pref.get("logp_accuracy")), "grounded_accuracy": number(grounded.get("accuracy")),
            "eval": str(out)}


def run_round(cfg: Any, r: int, policy: str, *, progress: bool, say, device: str | None = None,
              clock: RoundClock | None = None, scores: dict | None = None) -> dict[str, Any]:
    """Sample -> judge -> pairs -> train -> evaluate, each step resuming what an earlier run left."""
    from vlmdpo.engine.judge import judge_file
    from vlmdpo.engine.pairs import make_pairs
    from vlmdpo.engine.sample import SampleOptions, sample_file

    folder = round_dir(cfg.output_dir, r)
    folder.mkdir(parents=True, exist_ok=True)
    candidates, scored, pairs = folder / "candidates.jsonl", folder / "scored.jsonl", folder / "pairs.jsonl"
    options = SampleOptions(n=cfg.num_generations, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + r, batch_size=cfg.sample_batch_size)
    say(f"round {r}: sampling {cfg.num_generations} answers per prompt from {policy}")
    say(sample_file(cfg.prompts, candidates, _lazy_answerer(policy, options, cfg, device), options,
                    load_kwargs=data_options(cfg), progress=progress))
    step_done = clock.save if clock else (lambda: None)
    step_done()
    judged = judge_file(candidates, scored, scorer_for(cfg, r, candidates, device), progress=progress)
    say(f"round {r}: {judged.summary()}")
    step_done()
    if judged.waiting:
        raise FixableError(f"round {r}: {judged.waiting} rows not labelled yet",
                           f"label the rest of {candidates} in the studio's label page, then rerun the same command")
    counts = make_pairs(scored, pairs, strategy=cfg.pair_strategy, min_margin=cfg.min_margin)
    say(f"round {r}: {counts.summary()}")
    if counts.pairs == 0:
        raise FixableError(f"round {r}: the judge made no pairs from {scored} ({counts.summary()})",
                           "add prompts and rerun (only new prompts are sampled), or delete "
                           f"{candidates.name} and {scored.name} in {folder} and rerun with more varied answers "
                           "(a higher temperature or num_generations) or a judge that tells them apart")
    train_base, continue_from = round_start(cfg.output_dir, cfg.model_name_or_path, r, cfg.iterate_reference)
    say(f"round {r}: training on {counts.pairs} pairs from {continue_from or train_base}, reference "
        f"{'the start' if cfg.iterate_reference == 'base' else 'the previous round'} ({train_base})")
    # max_samples caps the prompts sampled; every pair made from them trains (strategy "all" makes several a prompt)
    values = {**cfg.train_values(), "model_name_or_path": train_base, "dataset": str(pairs),
              "output_dir": str(folder), "max_samples": None}
    trained = train_round(values, continue_from, say=say)
    step_done()
    return {"round": r, "policy": str(folder), "started_from": policy, "train_base": train_base,
            "continued_weights_of": continue_from, "prompts": counts.prompts, "pairs": counts.pairs,
            "ties": counts.ties, "low_margin": counts.low_margin, "one_answer": counts.one_answer,
            "unscored": counts.unscored,
            "train_loss": (trained.get("train") or {}).get("loss"), "train_steps": trained.get("global_step"),
            **held_out_metrics(cfg, str(folder), cfg.model_name_or_path, folder / "eval", progress=progress,
                               say=say, scores=scores)}


def _check_same_experiment(cfg: Any, record: dict[str, Any], path: Path) -> None:
    differ = [k for k in SHARED if k in record.get("settings", {}) and record["settings"][k] != getattr(cfg, k)]
    if differ:
        was = ", ".join(f"{k}: {record['settings'][k]}" for k in differ)
        raise FixableError(f"{path}: that round was made with {was}; this config says "
                           + ", ".join(f"{k}: {getattr(cfg, k)}" for k in differ),
                           "iterate into a new output_dir, or use the settings the earlier rounds used")


def iterate(config: Any, rounds: int, *, overrides: Sequence[str] | dict[str, Any] = (), progress: bool = True,
            device: str | None = None, echo: Callable[[str], None] | None = None) -> IterateResult:
    """Run (or resume) rounds 0..`rounds` of `config` (an iterate YAML, dict or IterateConfig)."""
    from vlmdpo.atomic import write_text
    from vlmdpo.config.iterate import IterateConfig, load_iterate_config
    from vlmdpo.engine.rounds import write_record

    say = echo or _stderr
    if isinstance(config, IterateConfig) and not overrides:
        cfg = config
    elif isinstance(config, dict):
        cfg = load_iterate_config(None, {**config, **dict(overrides)}, say=say)
    else:
        cfg = load_iterate_config(config, overrides, say=say)
    if rounds < 1:
        raise FixableError(f"--rounds {rounds}: must be at least 1", "pass --rounds 1 or more")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.held_out:
        say("note: no held_out_dataset, test_dataset or eval_dataset: rounds are not evaluated")
    settings = {k: getattr(cfg, k) for k in SHARED}
    records: list[dict[str, Any]] = []
    scores: dict = {}  # held-out scores by model: the start is scored once, not in every round
    policy = cfg.model_name_or_path
    for r in range(rounds + 1):
        done = round_dir(out, r) / ROUND_FILE
        if done.is_file():
            record = json.loads(done.read_text(encoding="utf-8"))
            _check_same_experiment(cfg, record, done)
            say(f"round {r}: done earlier ({done})")
        else:
            clock = RoundClock(round_dir(out, r) / "seconds.txt")
            if r == 0:
                record = {"round": 0, "policy": policy, **held_out_metrics(
                    cfg, policy, policy, round_dir(out, 0) / "eval", progress=progress, say=say, scores=scores)}
            else:
                record = run_round(cfg, r, policy, progress=progress, say=say, device=device, clock=clock,
                                   scores=scores)
            record.update(seconds=clock.seconds(), settings=settings)
            done.parent.mkdir(parents=True, exist_ok=True)
            write_text(done, json.dumps(record, indent=2, default=str) + "\n")
        records.append(record)
        policy = record["policy"]
        write_record(out, records)
    return IterateResult(out, records)
