"""`setup(cfg) -> Run`: everything a training run needs, built once, before the first step.

A `Run` holds the accelerator, the model and its reference source, the encoded datasets and how
to batch them, the optimizer and schedule, the loss settings, the metrics log and the resumable
state. `fit(run)` (loop.py) only steps through it; `finish(run, ...)` (finish.py) saves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from vlmdpo.config.run import FIXED_ON_RESUME
from vlmdpo.errors import FixableError
from vlmdpo.losses import LossSettings, RunningMean
from vlmdpo.train import checkpoint as ckpt
from vlmdpo.train import stages
from vlmdpo.train.fingerprint import data_identity, describe, differences, fingerprint
from vlmdpo.train.data import EncodedPairs, StepBatch, make_collate, make_loader, to_device
from vlmdpo.types import Dropped
from vlmdpo.train.output_dir import check_output_dir
from vlmdpo.train.metrics import MetricsLog
from vlmdpo.train.preflight import preflight
from vlmdpo.train.refcache import cache_key, default_cache_dir
from vlmdpo.train.schedule import StepPlan, build_optimizer, build_scheduler, epoch_batches, plan_steps, shard
from vlmdpo.train.step import RefSource

Say = Callable[[str], None]


@dataclass
class Batching:
    """How encoded pairs become device-ready batches: the layout's collate, the batch sizes, the workers."""

    collate: Callable[[list], StepBatch]
    device: Any
    world_size: int
    rank: int
    train_batch_size: int
    eval_batch_size: int
    num_workers: int
    seed: int
    lockstep: bool = False  # sharded (FSDP / DeepSpeed): every forward gathers parameters, a collective

    def eval_batches(self, ds: EncodedPairs, positions: list[int]) -> Iterator[StepBatch]:
        """This process's share of `positions`, in order, on the device.

        In lockstep every process runs as many batches as the first (which has the largest share):
        a shorter share is topped up with repeats of a batch marked `counted=False`, so that no
        process waits forever in a forward the others never run, and no pair counts twice."""
        mine = shard(positions, world_size=self.world_size, rank=self.rank)
        size = self.eval_batch_size
        batches = [mine[i:i + size] for i in range(0, len(mine), size)]
        most = -(-len(shard(positions, world_size=self.world_size, rank=0)) // size)
        extra = most - len(batches) if self.lockstep else 0
        batches += [batches[-1] if batches else positions[:size]] * extra
        loader = make_loader(ds, batches, self.collate, self.num_workers)
        return (to_device(b if i < len(batches) - extra else replace(b, counted=False), self.device)
                for i, b in enumerate(loader))

    def epoch(self, ds: EncodedPairs, epoch: int, skip: int) -> tuple[Iterator[StepBatch], int]:
        """The seeded shuffle of `epoch` for this process, past its first `skip` micro-batches:
        (iterator, number of micro-batches left)."""
        batches = epoch_batches(len(ds), epoch=epoch, seed=self.seed, batch_size=self.train_batch_size,
                                world_size=self.world_size, rank=self.rank)[skip:]
        return iter(make_loader(ds, batches, self.collate, self.num_workers)), len(batches)


@dataclass
class Run:
    cfg: Any  # the TrainConfig: the recipe, saved beside the model
    out: Path
    acc: Any  # accelerate.Accelerator
    say: Say
    bundle: Any  # ModelBundle: the unwrapped policy, processor, family
    model: Any  # the policy as prepared by accelerate (DDP-wrapped when distributed)
    optimizer: Any
    scheduler: Any
    plan: StepPlan
    train_ds: EncodedPairs
    eval_ds: EncodedPairs
    batching: Batching
    logps_fn: Callable
    train_ref: RefSource
    eval_ref: RefSource
    losses: LossSettings
    metric_keys: list[str]  # every metric the losses report: fixed keys for the cross-process reduce
    bco: RunningMean
    log: MetricsLog
    state: ckpt.TrainState
    resumed_from: Path | None = None
    dropped: list[Dropped] = field(default_factory=list)
    ref_cache: stages.RefCacheUse | None = None
    fingerprint: dict = field(default_factory=dict)  # saved in each checkpoint (fingerprint.py)
    save_when: str = "no"  # cfg.save_when where checkpoints can be written (see _checkpoint_every)
    save_steps: int | None = None

    @property
    def is_main(self) -> bool:
        return self.acc.is_main_process

    def optimizer_steps(self) -> Iterator[tuple[list[StepBatch], bool]]:
        """(micro-batches of one optimizer step, whether they end the epoch), from `state` onward.

        Reads `state` afresh at each epoch and step, so the caller advances it between yields."""
        state, accum = self.state, self.cfg.gradient_accumulation_steps
        while state.global_step < self.plan.total_steps:
            it, left = self.batching.epoch(self.train_ds, state.epoch, state.batch_in_epoch)
            while left and state.global_step < self.plan.total_steps:
                micro = [next(it) for _ in range(min(accum, left))]
                left -= len(micro)
                yield micro, left == 0


@dataclass
class Progress:
    """What fit() saw, for finish(): the last logged and evaluated metrics, and how it ended."""

    train_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    evaluated_at: int = -1
    stopped_early: bool = False
    last_saved: Path | None = None


def setup(cfg, *, echo: Say | None = None) -> Run:
    """Accelerator, data (with the fit check), model, reference, optimizer, schedule, resume."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    out = Path(cfg.output_dir)
    precision = preflight(cfg)  # bf16/fp16 the device lacks, a template for another family: errors
    acc = Accelerator(mixed_precision=precision, log_with=cfg.report_to or None, project_dir=str(out),
                      kwargs_handlers=[DistributedDataParallelKwargs(
                          find_unused_parameters=bool(cfg.ddp_find_unused_parameters))])
    main = acc.is_main_process
    say = (echo or stages.stderr) if main else (lambda _msg: None)
    check_output_dir(cfg, out)
    if main:
        _writable(out)
    set_seed(cfg.seed)

    train_recs, eval_recs = stages.load_records(
        cfg.dataset, cfg.eval_dataset, val_size=cfg.val_size, seed=cfg.seed, out=out, say=say, is_main=main,
        read=dict(format=cfg.format, image_root=cfg.image_root, image_path_map=cfg.image_path_map,
                  dataset_dir=cfg.dataset_dir, max_samples=cfg.max_samples,
                  allow_remote_images=cfg.allow_remote_images,
                  on_invalid=cfg.on_invalid, check_images=cfg.check_images))
    from vlmdpo import inference
    from vlmdpo.encode import encode_pair

    bundle = inference.load_for_training(
        cfg.model_name_or_path, finetuning_type=cfg.finetuning_type, dtype=cfg.dtype,
        attn_implementation=cfg.attn_implementation, trust_remote_code=cfg.trust_remote_code,
        lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, lora_target=cfg.lora_target,
        lora_modules=cfg.lora_modules, freeze_vision_tower=cfg.freeze_vision_tower,
        freeze_projector=cfg.freeze_projector, freeze_language_model=cfg.freeze_language_model,
        gradient_checkpointing=cfg.gradient_checkpointing, seed=cfg.seed)
    model = bundle.model
    model.train()  # from_pretrained returns eval mode
    if getattr(model, "hf_device_map", None) is None:  # quantized models are placed by their loader
        model.to(acc.device)  # before the reference precompute, which runs ahead of prepare()
    if cfg.ddp_find_unused_parameters is None and acc.num_processes > 1 and bundle.is_vlm:
        acc.ddp_handler.find_unused_parameters = True  # text-only batches leave the projector without grads
    encode = partial(encode_pair, processor=bundle.processor, family=bundle.family, max_length=cfg.max_length,
                     truncation=cfg.truncation, max_prompt_length=cfg.max_prompt_length,
                     max_completion_length=cfg.max_completion_length, image_max_pixels=cfg.image_max_pixels,
                     image_min_pixels=cfg.image_min_pixels,
                     video_fps=cfg.video_fps, video_max_frames=cfg.video_max_frames, video_max_pixels=cfg.video_max_pixels)
    run_print = fingerprint(cfg, data_identity(train_recs, eval_recs))
    train_keep, eval_keep, dropped = stages.fit_pairs(train_recs, eval_recs, encode, acc, out, say,
                                                      cfg.on_invalid, num_proc=cfg.dataset_num_proc or 1)
    train_ds, eval_ds = EncodedPairs(train_recs, train_keep, encode), EncodedPairs(eval_recs, eval_keep, encode)

    layout = stages.choose_layout(cfg.fast_options(), bundle, acc, say)
    batching = Batching(make_collate(layout.collate_fn),
                        device=acc.device, world_size=acc.num_processes, rank=acc.process_index,
                        train_batch_size=cfg.per_device_train_batch_size,
                        eval_batch_size=cfg.per_device_eval_batch_size, num_workers=cfg.dataloader_num_workers,
                        seed=cfg.seed, lockstep=sharded(acc))
    reference = None
    if cfg.needs_reference:
        from vlmdpo.model.reference import make_reference

        reference = make_reference(bundle.model, is_peft=bundle.is_peft, logps_fn=layout.logps_fn)
    refs = stages.reference_sources(
        reference, train_ds, eval_ds, batching.eval_batches, acc, say,
        cache_dir=default_cache_dir(cfg.output_dir, cfg.ref_cache_dir) if cfg.precompute_ref_log_probs else None,
        key_of=lambda ds: cache_key(cfg, bundle.processor, ds.records, ds.keep))

    plan = plan_steps(len(train_ds), batch_size=cfg.per_device_train_batch_size, world_size=acc.num_processes,
                      grad_accum=cfg.gradient_accumulation_steps, num_train_epochs=cfg.num_train_epochs,
                      max_steps=cfg.max_steps, warmup_steps=cfg.warmup_steps, warmup_ratio=cfg.warmup_ratio)
    optimizer = build_optimizer(model, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                **stages.part_rates(cfg, bundle, model, say))
    scheduler = build_scheduler(optimizer, name=cfg.lr_scheduler_type, plan=plan)
    # The scheduler is not prepared: accelerate would step it once per process per step.
    model, optimizer = acc.prepare(model, optimizer)
    save_steps = _checkpoint_every(cfg, acc, say)
    save_when = "no" if sharded(acc) else cfg.save_when
    state, resumed_from = _resume(cfg, run_print, acc, out, say, model=model, optimizer=optimizer,
                                  scheduler=scheduler)
    bco = RunningMean()
    bco.load_state_dict(state.bco_running_mean)
    if cfg.report_to:
        acc.init_trackers("vlmdpo", config={k: str(v) for k, v in cfg.model_dump().items()})
    log = MetricsLog(out / "metrics.jsonl", enabled=main, accelerator=acc, use_trackers=bool(cfg.report_to),
                     truncate_after_step=state.global_step)
    losses = LossSettings.from_config(cfg)
    return Run(cfg=cfg, out=out, acc=acc, say=say, bundle=bundle, model=model, optimizer=optimizer,
               scheduler=scheduler, plan=plan, train_ds=train_ds, eval_ds=eval_ds, batching=batching,
               logps_fn=layout.logps_fn, train_ref=refs.train, eval_ref=refs.eval, losses=losses,
               metric_keys=losses.metric_keys(), bco=bco, log=log, state=state, resumed_from=resumed_from,
               dropped=dropped, ref_cache=refs.cache, fingerprint=run_print, save_when=save_when, save_steps=save_steps)


def _writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise FixableError(f"output_dir: cannot write to '{out}' ({e.strerror or e})",
                           "set output_dir to a folder you can create and write to") from None


def _kind(acc) -> str:
    return str(getattr(acc.distributed_type, "value", acc.distributed_type)).upper()


def sharded(acc) -> bool:
    """True under FSDP / DeepSpeed: each process holds only shards of the parameters."""
    return _kind(acc) in ("FSDP", "DEEPSPEED")


def _checkpoint_every(cfg, acc, say: Say) -> int | None:
    """save_steps as it applies here. Checkpoints hold whole (gathered) tensors; sharded FSDP / DeepSpeed
    state is not written yet: there only the final model is saved, and asking for more is refused."""
    if not sharded(acc):
        return cfg.save_steps
    asked = ("save_steps" in cfg.model_fields_set and cfg.save_steps) or cfg.save_strategy in ("steps", "epoch")
    if asked or cfg.resume_from_checkpoint or cfg.early_stopping_patience or cfg.load_best_model_at_end:
        raise FixableError(f"save_steps / save_strategy / resume_from_checkpoint / early_stopping_patience / "
                           f"load_best_model_at_end: checkpoints are not supported under {_kind(acc)} yet",
                           "set save_steps: null (the final model is still saved), or train with DDP")
    if cfg.save_steps:
        say(f"no intermediate checkpoints under {_kind(acc)} yet (only the final model is saved)")
    return None


# keys whose change makes the saved schedule wrong: the schedule is then rebuilt at the saved step
_SCHEDULE_KEYS = {"learning_rate", "lr_scheduler_type", "warmup_steps", "warmup_ratio", "max_steps",
                  "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "dataset"}


def _resume(cfg, run_print: dict, acc, out: Path, say: Say, **parts) -> tuple[ckpt.TrainState, Path | None]:
    value = cfg.resume_from_checkpoint
    path = ckpt.resolve_resume(value, out)
    if path is None:
        if value == "auto":
            say(f"resume_from_checkpoint: auto: no checkpoint in {out}, starting fresh")
        elif ckpt.latest_checkpoint(out) is not None:
            say(f"note: {out} holds checkpoints of an earlier run (latest {ckpt.latest_checkpoint(out).name}); this "
                "run starts fresh and replaces those of the same steps (resume_from_checkpoint=auto continues it)")
        return ckpt.TrainState(), None
    diffs = differences(ckpt.read_fingerprint(path), run_print)
    refused = {k: v for k, v in diffs.items() if k not in cfg.resume_allow_changes}
    if refused:
        where = f"output_dir {out} holds checkpoints of a different run" if value == "auto" else \
            f"resume_from_checkpoint: {path} is a checkpoint of a different run"
        fixed = [k for k in refused if k in FIXED_ON_RESUME]
        fix = (f"train in a new output_dir ({', '.join(fixed)} cannot change on resume)" if fixed else
               f"use a new output_dir for a new run, or resume_allow_changes=[{','.join(refused)}] to continue "
               "this one with these changes")
        raise FixableError(f"{where} ({path.name}): {describe(refused)}", fix)
    reschedule = bool(_SCHEDULE_KEYS & set(diffs))
    state = ckpt.load_checkpoint(acc, path, load_schedule=not reschedule, **parts)
    if reschedule:
        _continue_schedule(parts["optimizer"], parts["scheduler"], state.global_step)
    say(f"resumed from {path} at step {state.global_step}")
    if diffs:
        say(f"resumed with changes (resume_allow_changes): {describe(diffs)}")
    return state, path


def _continue_schedule(optimizer, scheduler, step: int) -> None:
    """The new schedule (built from this run's settings) at the saved step, from its peak rates (one per group,
    kept by the scheduler): the loaded optimizer state carries the old learning rates in its param groups."""
    groups = optimizer.param_groups
    for g, peak in zip(groups, scheduler.base_lrs):
        g["initial_lr"] = peak
    scheduler.last_epoch = step
    lrs = [base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for g, value in zip(groups, lrs):
        g["lr"] = value
    scheduler._last_lr = lrs
