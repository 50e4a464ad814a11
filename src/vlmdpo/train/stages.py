"""What `setup` (run.py) assembles a run from: records, the fit check, the batch layout, the reference."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from vlmdpo.train.data import (
    EncodedPairs, fit_check, split_validation, summarize_bad, summarize_dropped, write_dropped, write_rejected,
)
from vlmdpo.train.refcache import RefCache, compute_ref_cache
from vlmdpo.train.schedule import shard
from vlmdpo.train.step import RefSource, TrainingError

Say = Callable[[str], None]


def stderr(msg: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(msg, file=sys.stderr)  # prints above an active progress bar instead of through it


def _source(value: str | list[str]) -> Any:
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def load_records(dataset: str | list[str], eval_dataset: str | list[str] | None, *, val_size: float, seed: int,
                 read: dict[str, Any], out: Path, say: Say, is_main: bool) -> tuple[list, list]:
    """Training and evaluation records: eval_dataset if given, else a seeded val_size split.
    `read` holds load_preferences' reading options (format, image_root, on_invalid, ...)."""
    from vlmdpo.data.load import load_preferences

    def rejected_path(name: str) -> Path | None:  # one writer, or processes would interleave lines
        return out / name if read.get("on_invalid") == "skip" and is_main else None

    res = load_preferences(_source(dataset), rejected_rows_path=rejected_path("rejected_rows.jsonl"), **read)
    say(f"train data: {res.summary()} ({', '.join(f'{k}: {v}' for k, v in res.formats.items())})")
    if res.n_skipped:
        say(f"  skipped rows are listed with their reasons in {out / 'rejected_rows.jsonl'}")
    train, evals = res.records, []
    if eval_dataset:
        ev = load_preferences(_source(eval_dataset), rejected_rows_path=rejected_path("rejected_rows_eval.jsonl"),
                              **read)
        say(f"eval data: {ev.summary()}")
        evals = ev.records
    elif val_size:
        train, evals = split_validation(train, val_size, seed)
        say(f"val_size {val_size}: {len(train)} train / {len(evals)} eval pairs")
    if not train:
        raise TrainingError("no valid training pairs: every row was rejected (see the messages above)")
    return train, evals


def _fit_one(recs: list, encode, acc, num_proc: int) -> tuple[list[int], list, list]:
    mine = shard(list(range(len(recs))), world_size=acc.num_processes, rank=acc.process_index)
    kept, dropped, bad = fit_check(recs, encode, mine, num_proc)
    if acc.num_processes > 1:
        from accelerate.utils import gather_object

        parts = gather_object([(kept, dropped, bad)])
        kept = sorted(i for k, _, _ in parts for i in k)
        dropped = [d for _, ds, _ in parts for d in ds]
        bad = [b for _, _, bs in parts for b in bs]
    return kept, dropped, bad


def fit_pairs(train_recs: list, eval_recs: list, encode, acc, out: Path, say: Say, on_invalid: str = "error",
              num_proc: int = 1) -> tuple[list[int], list[int], list]:
    """Which pairs can be trained on. Pairs that do not fit max_length are dropped: printed (first
    few) and written to output_dir/dropped_pairs.jsonl. Pairs with bad data found while encoding
    (a truncated image, another model's chat template, ...) follow on_invalid: "error" stops with
    every one listed (file:row, field, fix); "skip" leaves them out, reported under their own heading
    and appended to rejected_rows[_eval].jsonl. A run with nothing left stops here. `num_proc`
    processes (per training process) encode the pairs (`data.fit_check`)."""
    from vlmdpo.data.validate import DataError

    path = out / "dropped_pairs.jsonl"
    if acc.is_main_process and path.exists():
        path.unlink()  # this run's list only
    say(f"encoding check: {len(train_recs) + len(eval_recs)} pairs"
        + (f" ({num_proc} processes)" if num_proc > 1 else ""))
    all_dropped, all_bad, keeps = [], [], []
    for recs, split, rejected in ((train_recs, "train", "rejected_rows.jsonl"),
                                  (eval_recs, "eval", "rejected_rows_eval.jsonl")):
        kept, dropped, bad = _fit_one(recs, encode, acc, num_proc)
        keeps.append(kept)
        all_dropped += dropped
        all_bad += bad
        if dropped:
            say(summarize_dropped(dropped, len(recs), split))
            if acc.is_main_process:
                write_dropped(path, dropped, split)
        if bad and on_invalid == "skip":
            say(summarize_bad(bad, len(recs), split))
            say(f"  listed with their reasons in {out / rejected}")
            if acc.is_main_process:
                write_rejected(out / rejected, bad)
    if all_bad and on_invalid != "skip":
        raise DataError(all_bad, max_listed=10, header=(
            f"{len(all_bad)} pair(s) cannot be trained on (found while encoding them). "
            "Fix them, or set on_invalid: skip to train on the rest:"))
    if all_dropped:
        say(f"  all dropped pairs with reasons: {path}")
    if not keeps[0]:
        raise TrainingError(f"all {len(train_recs)} training pairs were left out by the encoding check; "
                            "raise max_length (or max_prompt_length), use truncation: completions, or lower "
                            "image_max_pixels, and fix the pairs listed above")
    return keeps[0], keeps[1], all_dropped


@dataclass
class RefCacheUse:
    """Where the training split's precomputed reference log-probs live, and whether they were reused."""

    path: Path
    reused: bool


@dataclass
class References:
    train: RefSource
    eval: RefSource
    cache: RefCacheUse | None = None


def reference_sources(reference, train_ds: EncodedPairs, eval_ds: EncodedPairs, eval_batches, acc, say: Say, *,
                      cache_dir: Path | None, key_of: Callable[[EncodedPairs], str]) -> References:
    """Reference log-probs: none (reference-free losses: `reference` is None), live from the
    reference model, or, with a `cache_dir`, precomputed once and cached on disk under the key
    `key_of(dataset)` (a full fine-tuning run then frees its frozen copy)."""
    if reference is None:
        return References(RefSource(), RefSource())
    if getattr(reference, "kind", "") == "frozen_copy":
        reference.model.to(acc.device)
    if cache_dir is None:
        return References(RefSource(reference), RefSource(reference))
    used: list[RefCacheUse] = []

    def cached(ds: EncodedPairs, split: str) -> RefCache | None:
        if not len(ds):
            return None
        path = cache_dir / f"ref-{key_of(ds)}.pt"
        if path.is_file():
            say(f"reference log-probs ({split}): reusing {path}")
            used.append(RefCacheUse(path, reused=True))
            return RefCache.load(path)
        used.append(RefCacheUse(path, reused=False))
        say(f"reference log-probs ({split}): computing for {len(ds)} pairs")

        def ref_logps(batch):
            with torch.no_grad():
                return reference.logps(batch)

        cache = compute_ref_cache(range(len(ds)), lambda pos: eval_batches(ds, pos), ref_logps, len(ds), acc)
        if acc.is_main_process:
            cache.save(path)
            say(f"  cached in {path}")
        acc.wait_for_everyone()
        return cache

    train_cache, eval_cache = cached(train_ds, "train"), cached(eval_ds, "eval")
    cache = RefCacheUse(used[0].path, reused=any(u.reused for u in used)) if train_cache is not None else None
    return References(RefSource(cache=train_cache), RefSource(cache=eval_cache), cache)


def track_best(state, metrics: dict[str, float], *, metric: str, greater: bool, patience: int | None,
               required: bool) -> bool:
    """Track the best `metric` (and the lowest eval_loss, for the record); True when `patience`
    evaluations in a row did not improve it. A `required` metric missing from `metrics` is an error."""
    if state.best_metric is None and metric == "eval_loss":
        state.best_metric = state.best_eval_loss  # a checkpoint from before best_metric existed
    loss = metrics.get("eval_loss")
    if loss is not None and (state.best_eval_loss is None or loss < state.best_eval_loss):
        state.best_eval_loss = float(loss)
    if metric not in metrics:
        if required:
            raise TrainingError(f"metric_for_best_model: '{metric}' is not an evaluation metric of this run; "
                                f"use one of {', '.join(sorted(metrics))}")
        return False
    value, best = float(metrics[metric]), state.best_metric
    if best is None or (value > best if greater else value < best):
        state.best_metric = value
        state.evals_without_improvement = 0
        return False
    state.evals_without_improvement += 1
    return bool(patience) and state.evals_without_improvement >= patience


def due(strategy: str, every: int | None, step: int, epoch_done: bool) -> bool:
    """Whether an eval / save strategy (no, steps, epoch) asks for one after `step`."""
    if strategy == "steps":
        return bool(every) and step % every == 0
    return strategy == "epoch" and epoch_done


def epoch_float(state, batches_per_epoch: int) -> float:
    return state.epoch + state.batch_in_epoch / max(batches_per_epoch, 1)


def part_rates(cfg, bundle, model, say: Say) -> dict[str, Any]:
    """build_optimizer's arguments for vision_tower_lr / projector_lr: each set rate, and how to find its part."""
    from vlmdpo.model.parts import param_part

    rates = {part: lr for part, lr in (("vision_tower", cfg.vision_tower_lr), ("projector", cfg.projector_lr))
             if lr is not None}
    if not rates:
        return {}

    def part_of(name: str) -> str:
        return param_part(name, bundle.family)

    trained = {part_of(n) for n, p in model.named_parameters() if p.requires_grad}
    for part in [p for p in rates if p not in trained]:
        say(f"note: {part}_lr: {cfg.model_name_or_path} has no trainable {part.replace('_', ' ')}; the rate is unused")
    return {"part_lrs": rates, "part_of": part_of}


def choose_layout(options, bundle, acc, say: Say):
    """The run's (collate_fn, logps_fn) pair, chosen once (`vlmdpo.batching.layout.select_layout`)."""
    from vlmdpo.batching.layout import distributed_kind, select_layout

    layout = select_layout(options, model=bundle.model, family=bundle.family,
                           pad_token_id=bundle.pad_token_id,
                           distributed_type=distributed_kind(acc))
    if layout.reason_off:
        say(layout.reason_off)
    elif layout.fast_paths:
        say(f"fast paths: {', '.join(layout.fast_paths)}")
    return layout
