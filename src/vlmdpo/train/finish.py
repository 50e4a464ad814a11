"""`finish(run, progress) -> TrainResult`: the best model restored (early stopping,
load_best_model_at_end), the model saved, the record written."""
from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from vlmdpo import atomic
from vlmdpo.hub import push_run
from vlmdpo.train.checkpoint import load_weights
from vlmdpo.types import Dropped
from vlmdpo.train.metrics import read_metrics
from vlmdpo.train.plot import plot_training_curves
from vlmdpo.train.run import Progress, Run, sharded


@dataclass
class TrainResult:
    output_dir: Path
    global_step: int
    train_metrics: dict[str, float] = field(default_factory=dict)  # last logged training metrics
    eval_metrics: dict[str, float] = field(default_factory=dict)  # last evaluation (eval_* names)
    best_eval_loss: float | None = None
    best_metric: float | None = None  # the best metric_for_best_model (eval_loss unless set)
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


def finish(run: Run, progress: Progress) -> TrainResult:
    state, acc = run.state, run.acc
    best = None
    keeps_best = run.cfg.early_stopping_patience or run.cfg.load_best_model_at_end
    if keeps_best and state.best_checkpoint and Path(state.best_checkpoint).is_dir():
        run.say(f"restoring the best model ({run.cfg.best_metric} {state.best_metric:.4g}) from "
                f"{state.best_checkpoint}")
        load_weights(acc, Path(state.best_checkpoint), run.model)
        best = Path(state.best_checkpoint)
    save_final(acc, run.model, is_peft=run.bundle.is_peft, processor=run.bundle.processor,
               config=run.cfg.model_dump(), out=run.out, say=run.say)
    result = TrainResult(
        output_dir=run.out, global_step=state.global_step, train_metrics=progress.train_metrics,
        eval_metrics=progress.eval_metrics, best_eval_loss=state.best_eval_loss,
        best_metric=state.best_metric, best_checkpoint=best,
        stopped_early=progress.stopped_early, n_train_pairs=len(run.train_ds), n_eval_pairs=len(run.eval_ds),
        dropped=run.dropped, ref_cache_path=run.ref_cache.path if run.ref_cache else None,
        ref_cache_reused=bool(run.ref_cache and run.ref_cache.reused),
        model=acc.unwrap_model(run.model), processor=run.bundle.processor)
    if run.is_main:
        result.plot_path = plot_training_curves(read_metrics(run.out / "metrics.jsonl"),
                                                run.out / "training_curves.png")
        atomic.write_text(run.out / "train_results.json", json.dumps({
            "global_step": state.global_step, "train": result.train_metrics, "eval": result.eval_metrics,
            "best_eval_loss": state.best_eval_loss, "stopped_early": result.stopped_early,
            "pairs_seen": state.pairs_seen, "tokens_seen": state.tokens_seen,
            "n_train_pairs": result.n_train_pairs, "n_eval_pairs": result.n_eval_pairs,
            "dropped_pairs": len(result.dropped)}, indent=2, default=str))
    if run.cfg.report_to:
        acc.end_training()
    acc.wait_for_everyone()
    if run.is_main and run.cfg.push_to_hub:  # after everything is saved: a failed upload loses nothing
        push_run(run.out, run.cfg.hub_model_id, run.cfg.model_dump(), is_peft=run.bundle.is_peft,
                 is_vlm=run.bundle.is_vlm, say=run.say)
    return result


def save_final(acc, model, *, is_peft: bool, processor, config: dict[str, Any], out: Path, say) -> None:
    """The trained model (LoRA adapter, or full weights) with its processor and the config used."""
    import yaml

    acc.wait_for_everyone()
    unwrapped = acc.unwrap_model(model)
    # every process takes part: FSDP / DeepSpeed gather whole tensors here (onto the main process);
    # a LoRA model's own state is whole unless sharded, and save_pretrained keeps only its adapter
    state_dict = acc.get_state_dict(model) if sharded(acc) or not is_peft else None
    if acc.is_main_process:
        # written beside, then each file renamed in: a kill leaves old or new files, never partial ones
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-final-", dir=out))
        try:
            with _original_class(unwrapped):
                unwrapped.save_pretrained(str(tmp), state_dict=state_dict)
            processor.save_pretrained(str(tmp))
            (tmp / "vlmdpo_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
            atomic.move_files_in(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        say(f"saved the {'LoRA adapter' if is_peft else 'model'} and processor to {out}")
    acc.wait_for_everyone()


@contextmanager
def _original_class(model) -> Iterator[None]:
    """FSDP2's `fully_shard` swaps a module's class for a generated `FSDP<Name>(FSDPModule, Name)`,
    and transformers finds a model's checkpoint key conversions by class name: saved as the
    generated class, Qwen2-VL's weights would keep their in-memory names, unlike a one-process run.
    The state dict handed to save_pretrained is already whole, so the model saves as its own class."""
    from torch.distributed.fsdp import FSDPModule

    swapped = type(model)
    if not isinstance(model, FSDPModule):
        yield
        return
    model.__class__ = next(b for b in swapped.__bases__ if not issubclass(b, FSDPModule))
    try:
        yield
    finally:
        model.__class__ = swapped
