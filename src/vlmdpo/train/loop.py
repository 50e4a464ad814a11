"""The training loop on accelerate.Accelerator: config in, trained model and metrics out.

config -> load_preferences -> validation split -> load_model -> fit check (encode, report drops)
-> optional reference precompute (cached on disk) -> steps (policy and reference log-probs,
compute_loss, backward, accumulation, clipping, AdamW, schedule) with logging, evaluation,
early stopping and atomic checkpoints -> final model + processor, metrics.jsonl, curves PNG.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

from vlmdpo.losses import RunningMean
from vlmdpo.train import checkpoint as ckpt
from vlmdpo.train import stages
from vlmdpo.train.data import Dropped, EncodedPairs, make_collate, make_loader, to_device
from vlmdpo.train.metrics import (MetricsLog, Throughput, WeightedMean, format_postfix, peak_memory_gb, prefixed,
                                  read_metrics)
from vlmdpo.train.plot import plot_training_curves
from vlmdpo.train.schedule import build_optimizer, build_scheduler, epoch_batches, plan_steps, shard
from vlmdpo.train.step import LossSettings, TrainingError, evaluate, train_step


@dataclass
class TrainResult:
    output_dir: Path
    global_step: int
    train_metrics: dict[str, float] = field(default_factory=dict)  # last logged training metrics
    eval_metrics: dict[str, float] = field(default_factory=dict)  # last evaluation (eval_* names)
    best_eval_loss: float | None = None
    best_checkpoint: Path | None = None
    stopped_early: bool = False
    n_train_pairs: int = 0
    n_eval_pairs: int = 0
    dropped: list[Dropped] = field(default_factory=list)
    ref_cache_path: Path | None = None
    ref_cache_reused: bool = False
    plot_path: Path | None = None
    model: Any = field(default=None, repr=False)  # the trained policy (unwrapped), for use in the same process
    processor: Any = field(default=None, repr=False)


def run_training(cfg, *, echo: Callable[[str], None] | None = None) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    out = Path(cfg.output_dir)
    precision = "bf16" if cfg.bf16 else "fp16" if cfg.fp16 else "no"
    acc = Accelerator(mixed_precision=precision, log_with=cfg.report_to or None, project_dir=str(out),
                      kwargs_handlers=[DistributedDataParallelKwargs(
                          find_unused_parameters=bool(cfg.ddp_find_unused_parameters))])
    main = acc.is_main_process
    say = (echo or stages.stderr) if main else (lambda _msg: None)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)
    result = TrainResult(output_dir=out, global_step=0)

    train_recs, eval_recs = stages.load_records(cfg, out, say, is_main=main)
    from vlmdpo.encode import encode_pair
    from vlmdpo.model.load import load_model

    bundle = load_model(cfg)
    model = bundle.model
    model.train()  # from_pretrained returns eval mode
    if getattr(model, "hf_device_map", None) is None:  # quantized models are placed by their loader
        model.to(acc.device)  # before the reference precompute, which runs ahead of prepare()
    if cfg.ddp_find_unused_parameters is None and acc.num_processes > 1 and bundle.is_vlm:
        acc.ddp_handler.find_unused_parameters = True  # text-only batches leave the projector without grads
    encode = partial(encode_pair, processor=bundle.processor, family=bundle.family, max_length=cfg.max_length,
                     truncation=cfg.truncation, image_max_pixels=cfg.image_max_pixels,
                     image_min_pixels=cfg.image_min_pixels)
    train_keep, eval_keep, result.dropped = stages.fit_pairs(train_recs, eval_recs, encode, acc, out, say)
    result.n_train_pairs, result.n_eval_pairs = len(train_keep), len(eval_keep)
    train_ds = EncodedPairs(train_recs, train_keep, encode)
    eval_ds = EncodedPairs(eval_recs, eval_keep, encode)
    layout = stages.choose_layout(cfg, bundle, acc, say)
    collate_fn, logps_fn = make_collate(layout.collate_fn), layout.logps_fn

    def loader_for(ds, positions):  # device-ready batches over this process's share of `positions`
        mine = shard(positions, world_size=acc.num_processes, rank=acc.process_index)
        bs = cfg.per_device_eval_batch_size
        batches = [mine[i:i + bs] for i in range(0, len(mine), bs)]
        return (to_device(b, acc.device) for b in make_loader(ds, batches, collate_fn, cfg.dataloader_num_workers))

    losses = LossSettings.from_config(cfg)
    train_ref, eval_ref = stages.reference_sources(cfg, bundle, train_ds, eval_ds, loader_for, acc, say, result, logps_fn)

    plan = plan_steps(len(train_ds), batch_size=cfg.per_device_train_batch_size, world_size=acc.num_processes,
                      grad_accum=cfg.gradient_accumulation_steps, num_train_epochs=cfg.num_train_epochs,
                      max_steps=cfg.max_steps, warmup_steps=cfg.warmup_steps, warmup_ratio=cfg.warmup_ratio)
    optimizer = build_optimizer(model, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, name=cfg.lr_scheduler_type, plan=plan)
    ckpt.install_trainable_only_hooks(acc, model)
    model, optimizer = acc.prepare(model, optimizer)
    # The scheduler is not prepared: accelerate would step it once per process per step.
    acc.register_for_checkpointing(scheduler)

    state = ckpt.TrainState()
    resume = ckpt.resolve_resume(cfg.resume_from_checkpoint, out)
    if resume is not None:
        state = ckpt.load_checkpoint(acc, resume)
        say(f"resumed from {resume} at step {state.global_step}")
    elif cfg.resume_from_checkpoint == "auto":
        say(f"resume_from_checkpoint: auto: no checkpoint in {out}, starting fresh")
    bco = RunningMean()
    bco.load_state_dict(state.bco_running_mean)
    if cfg.report_to:
        acc.init_trackers("vlmdpo", config={k: str(v) for k, v in cfg.model_dump().items()})
    mlog = MetricsLog(out / "metrics.jsonl", enabled=main, accelerator=acc, use_trackers=bool(cfg.report_to),
                      truncate_after_step=state.global_step)
    keys = losses.metric_keys()
    common = dict(logps_fn=logps_fn, losses=losses, bco=bco, accelerator=acc, metric_keys=keys)
    eval_positions = list(range(len(eval_ds)))

    def run_eval() -> dict[str, float]:
        # the unwrapped model: DDP's forward may broadcast buffers, a collective that would hang
        # when processes hold different numbers of eval batches
        m = prefixed(evaluate(lambda: loader_for(eval_ds, eval_positions), model=acc.unwrap_model(model),
                              ref_source=eval_ref,
                              **common), "eval_")
        mlog.write(state.global_step, stages.epoch_float(state, plan.batches_per_epoch), m)
        say(f"step {state.global_step}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()
                                                       if k in ("eval_loss", "eval_rewards/accuracies")))
        result.eval_metrics = m
        return m

    from tqdm.auto import tqdm

    say(f"training: {len(train_ds)} pairs, {plan.total_steps} steps ({plan.steps_per_epoch}/epoch), "
        f"{acc.num_processes} process(es), batch {cfg.per_device_train_batch_size}x{acc.num_processes}"
        f"x{cfg.gradient_accumulation_steps}")
    bar = tqdm(total=plan.total_steps, initial=state.global_step, disable=not (main and cfg.progress_bar),
               desc="train", unit="step", dynamic_ncols=True)
    window, speed = WeightedMean(), Throughput()
    last_saved = resume if resume is not None else None
    evaluated_at = -1
    try:
        while state.global_step < plan.total_steps:
            batches = epoch_batches(len(train_ds), epoch=state.epoch, seed=cfg.seed,
                                    batch_size=cfg.per_device_train_batch_size, world_size=acc.num_processes,
                                    rank=acc.process_index)[state.batch_in_epoch:]
            it = iter(make_loader(train_ds, batches, collate_fn, cfg.dataloader_num_workers))
            left = len(batches)
            while left and state.global_step < plan.total_steps:
                micro = [next(it) for _ in range(min(cfg.gradient_accumulation_steps, left))]
                m = train_step(micro, model=model, ref_source=train_ref, optimizer=optimizer, scheduler=scheduler,
                               max_grad_norm=cfg.max_grad_norm, step_no=state.global_step + 1,
                               **common)
                left -= len(micro)
                state.global_step += 1
                state.batch_in_epoch += len(micro)
                pairs, tokens = int(m.pop("_pairs")), int(m.pop("_tokens"))  # summed over processes
                state.pairs_seen += pairs
                state.tokens_seen += tokens
                speed.add(pairs, tokens)
                window.add(m)
                epoch_done = left == 0
                if epoch_done:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                bar.update(1)
                if state.global_step % cfg.logging_steps == 0 or state.global_step == plan.total_steps:
                    logged = {**window.result(), "learning_rate": m["learning_rate"], **speed.rates(),
                              "peak_memory_gb": peak_memory_gb(acc.device)}
                    window.reset()
                    mlog.write(state.global_step, stages.epoch_float(state, plan.batches_per_epoch), logged)
                    result.train_metrics = logged
                    bar.set_postfix(format_postfix(logged, (("loss", "loss"), ("rewards/accuracies", "acc"),
                                                            ("pairs/s", "pairs/s"))))
                due_eval = len(eval_ds) > 0 and (
                    (cfg.eval_steps and state.global_step % cfg.eval_steps == 0)
                    or (not cfg.eval_steps and epoch_done))
                stop = False
                if due_eval:
                    em = run_eval()
                    evaluated_at = state.global_step
                    stop = stages.early_stopping(state, em["eval_loss"], cfg.early_stopping_patience)
                improved = due_eval and state.evals_without_improvement == 0
                if (cfg.save_steps and state.global_step % cfg.save_steps == 0) or (
                        improved and cfg.early_stopping_patience):
                    state.bco_running_mean = bco.state_dict()
                    if improved and cfg.early_stopping_patience:
                        state.best_checkpoint = str(out / f"{ckpt.PREFIX}{state.global_step}")
                    last_saved = ckpt.save_checkpoint(acc, out, state)
                    if main:
                        best = Path(state.best_checkpoint) if state.best_checkpoint else None
                        ckpt.rotate_checkpoints(out, cfg.save_total_limit, keep=best)
                if stop:
                    say(f"early stopping at step {state.global_step}: eval_loss has not improved on "
                        f"{state.best_eval_loss:.4g} for {cfg.early_stopping_patience} evaluations")
                    result.stopped_early = True
                    break
            if result.stopped_early:
                break
    except TrainingError as e:
        bar.close()
        where = f" Last good checkpoint: {last_saved}." if last_saved else " No checkpoint was saved yet."
        raise TrainingError(f"{e}{where}") from None
    bar.close()
    if len(eval_ds) and evaluated_at != state.global_step and not result.stopped_early:
        run_eval()

    if cfg.early_stopping_patience and state.best_checkpoint and Path(state.best_checkpoint).is_dir():
        say(f"restoring the best model (eval_loss {state.best_eval_loss:.4g}) from {state.best_checkpoint}")
        acc.load_state(state.best_checkpoint, strict=False)
        result.best_checkpoint = Path(state.best_checkpoint)
    result.best_eval_loss = state.best_eval_loss
    stages.save_final(acc, model, bundle, cfg, out, say)
    result.global_step = state.global_step
    result.model, result.processor = acc.unwrap_model(model), bundle.processor
    if main:
        result.plot_path = plot_training_curves(read_metrics(out / "metrics.jsonl"), out / "training_curves.png")
        (out / "train_results.json").write_text(json.dumps({
            "global_step": state.global_step, "train": result.train_metrics, "eval": result.eval_metrics,
            "best_eval_loss": state.best_eval_loss, "stopped_early": result.stopped_early,
            "pairs_seen": state.pairs_seen, "tokens_seen": state.tokens_seen,
            "n_train_pairs": result.n_train_pairs, "n_eval_pairs": result.n_eval_pairs,
            "dropped_pairs": len(result.dropped)}, indent=2, default=str))
    if cfg.report_to:
        acc.end_training()
    acc.wait_for_everyone()
    return result
