"""The training run: `run_training(cfg) = finish(fit(setup(cfg)))`.

setup (run.py): accelerator -> records -> model -> fit check (encode, report drops) -> batch
layout -> reference (live, or precomputed and cached on disk) -> optimizer, schedule -> resume.
fit (here): for each optimizer step, policy and reference log-probs -> loss -> backward over the
micro-batches -> clip -> step; then, when due (eval_strategy / save_strategy), log, evaluate
(best metric, early stopping), checkpoint; the final model is evaluated once more if the last step was not.
finish (finish.py): best model restored, model + processor + config saved,
metrics plot, train_results.json.
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Callable

from vlmdpo.train import checkpoint as ckpt
from vlmdpo.train import stages
from vlmdpo.train import state_files
from vlmdpo.train.interrupt import Interrupted, StopRequest, resume_command
from vlmdpo.train.finish import TrainResult, finish
from vlmdpo.train.metrics import Throughput, WeightedMean, format_postfix, peak_memory_gb, prefixed
from vlmdpo.train.run import Progress, Run, setup
from vlmdpo.train.step import TrainingError, evaluate, train_step

__all__ = ["run_training", "fit", "evaluate_now", "TrainResult"]


def run_training(cfg, *, echo: Callable[[str], None] | None = None) -> TrainResult:
    run = setup(cfg, echo=echo)
    return finish(run, fit(run))


def fit(run: Run) -> Progress:
    cfg, state, plan = run.cfg, run.state, run.plan
    progress = Progress(last_saved=run.resumed_from)
    run.say(f"training: {len(run.train_ds)} pairs, {plan.total_steps} steps ({plan.steps_per_epoch}/epoch), "
            f"{run.acc.num_processes} process(es), batch {cfg.per_device_train_batch_size}x{run.acc.num_processes}"
            f"x{cfg.gradient_accumulation_steps}")
    from tqdm.auto import tqdm

    bar = tqdm(total=plan.total_steps, initial=state.global_step, disable=not (run.is_main and cfg.progress_bar),
               desc="train", unit="step", dynamic_ncols=True)
    window, speed = WeightedMean(), Throughput()
    stop_request = StopRequest(run.say)
    try:
        with stop_request.installed():
            _steps(run, progress, bar, window, speed, stop_request)
    except Interrupted:
        raise
    except TrainingError as e:
        raise TrainingError(f"{e}{_where_to_resume(run, failed_step=state.global_step + 1)}") from None
    finally:
        bar.close()
    evaluates = len(run.eval_ds) and run.cfg.eval_when != "no"
    if evaluates and progress.evaluated_at != state.global_step and not progress.stopped_early:
        progress.eval_metrics = evaluate_now(run)  # the final model is always evaluated (unless eval_strategy: no)
    return progress


def _steps(run: Run, progress: Progress, bar, window: WeightedMean, speed: Throughput, stop_request) -> None:
    cfg, state, plan = run.cfg, run.state, run.plan
    for micro, epoch_done in run.optimizer_steps():
        m = train_step(micro, model=run.model, ref_source=run.train_ref, optimizer=run.optimizer,
                       scheduler=run.scheduler, max_grad_norm=cfg.max_grad_norm, step_no=state.global_step + 1,
                       **_loss_kwargs(run))
        _advance(state, m, len(micro), epoch_done, speed)
        window.add(m)
        bar.update(1)
        if state.global_step % cfg.logging_steps == 0 or state.global_step == plan.total_steps:
            logged = {**window.result(), "learning_rate": m["learning_rate"], **speed.rates(),
                      "peak_memory_gb": peak_memory_gb(run.acc.device)}
            window.reset()
            run.log.write(state.global_step, stages.epoch_float(state, plan.batches_per_epoch), logged)
            progress.train_metrics = logged
            bar.set_postfix(format_postfix(logged, (("loss", "loss"), ("rewards/accuracies", "acc"),
                                                    ("pairs/s", "pairs/s"))))
        step, keep_best = state.global_step, bool(cfg.early_stopping_patience or cfg.load_best_model_at_end)
        due_eval = len(run.eval_ds) > 0 and stages.due(cfg.eval_when, cfg.eval_every, step, epoch_done)
        stop = False
        if due_eval:
            progress.eval_metrics = evaluate_now(run)
            progress.evaluated_at = step
            stop = stages.track_best(state, progress.eval_metrics, metric=cfg.best_metric,
                                     greater=cfg.best_is_greater, patience=cfg.early_stopping_patience,
                                     required=keep_best)
        improved = due_eval and keep_best and state.evals_without_improvement == 0
        if stages.due(run.save_when, run.save_steps, step, epoch_done) or improved:
            progress.last_saved = _save(run, best=improved)
        if stop:
            run.say(f"early stopping at step {step}: {cfg.best_metric} has not improved on "
                    f"{state.best_metric:.4g} for {cfg.early_stopping_patience} evaluations")
            progress.stopped_early = True
            break
        signum = stop_request.requested(run.acc)
        if signum:
            if progress.last_saved is None or ckpt.checkpoint_step(progress.last_saved) != state.global_step:
                progress.last_saved = _save(run, best=False)
            raise Interrupted(f"stopped by {signal.Signals(signum).name} after step {state.global_step}; "
                              f"saved {progress.last_saved}. Resume with: "
                              f"{resume_command(progress.last_saved)}", signum)


def _where_to_resume(run: Run, failed_step: int) -> str:
    """The newest checkpoint that resumes: finite weights that already gave a finite loss (a checkpoint of
    the step just before `failed_step` holds the very weights that failed, so resuming it fails again)."""
    found = ckpt.list_checkpoints(run.out)
    before = [p for p in found if (ckpt.checkpoint_step(p) or 0) == failed_step - 1]
    note = f" {before[0]} holds the weights that gave this (resuming it repeats the step)." if before else ""
    for p in reversed(found):
        if (ckpt.checkpoint_step(p) or 0) < failed_step - 1 and ckpt.finite_weights(p):
            return (f"{note} Last good checkpoint: {p}; resume with resume_from_checkpoint={p} "
                    f"resume_allow_changes=[learning_rate] learning_rate=<lower>.")
    return f"{note} No earlier checkpoint resumes: start again (a new output_dir) with the changes above."


def _loss_kwargs(run: Run) -> dict:
    return dict(logps_fn=run.logps_fn, losses=run.losses, bco=run.bco, accelerator=run.acc,
                metric_keys=run.metric_keys)


def _advance(state: ckpt.TrainState, m: dict[str, float], n_micro: int, epoch_done: bool, speed: Throughput) -> None:
    """Count the step that just ran (pairs and tokens are summed over processes by train_step)."""
    state.global_step += 1
    state.batch_in_epoch += n_micro
    pairs, tokens = int(m.pop("_pairs")), int(m.pop("_tokens"))
    state.pairs_seen += pairs
    state.tokens_seen += tokens
    speed.add(pairs, tokens)
    if epoch_done:
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0


def evaluate_now(run: Run) -> dict[str, float]:
    """Evaluate on the eval split, log it, and say the headline numbers."""
    # the unwrapped model: DDP's forward may broadcast buffers, a collective that would hang
    # when processes hold different numbers of eval batches
    positions = list(range(len(run.eval_ds)))
    m = prefixed(evaluate(lambda: run.batching.eval_batches(run.eval_ds, positions),
                          model=run.acc.unwrap_model(run.model), ref_source=run.eval_ref, **_loss_kwargs(run)), "eval_")
    run.log.write(run.state.global_step, stages.epoch_float(run.state, run.plan.batches_per_epoch), m)
    run.say(f"step {run.state.global_step}: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()
                                                          if k in ("eval_loss", "eval_rewards/accuracies")))
    return m


def _save(run: Run, *, best: bool) -> Path:
    state = run.state
    state.bco_running_mean = run.bco.state_dict()
    if best:
        state.best_checkpoint = str(run.out / f"{ckpt.PREFIX}{state.global_step}")
    bad = state_files.nonfinite(state_files.trainable_weights(run.acc.unwrap_model(run.model)))
    if bad:
        raise TrainingError(f"training stopped at step {state.global_step}: weights are not finite "
                            f"({', '.join(bad[:3])}), so no checkpoint was saved. Try a lower learning_rate "
                            "or max_grad_norm: 1.0.")
    saved = ckpt.save_checkpoint(run.acc, run.out, state, model=run.model, optimizer=run.optimizer,
                                 scheduler=run.scheduler, fingerprint=run.fingerprint)
    if run.is_main:
        keep = Path(state.best_checkpoint) if state.best_checkpoint else None
        ckpt.rotate_checkpoints(run.out, run.cfg.save_total_limit, keep=keep)
    return saved
