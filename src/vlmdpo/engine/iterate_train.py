"""Which model each round of `vlmdpo iterate` trains, and against which reference.

Training loads a full model (a name or a folder with config.json) and builds its reference from it:
LoRA's reference is the loaded model with the adapter off, full fine-tuning's a frozen copy. So:
- reference `previous`: round r loads round r-1's policy as a full model (a LoRA round merged into
  `round-<r-1>/merged`) and trains a fresh adapter (or all weights) on it;
- reference `base`: round r loads the start model and then puts round r-1's trained weights (its adapter,
  or its full weights) into the policy before the first step, so the reference stays the start.
A start that is an adapter or checkpoint folder (e.g. the quickstart's output) is merged once into
`round-0/start-merged`: that merged model is "the base".
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from vlmdpo.errors import FixableError


def round_dir(output_dir: str | Path, r: int) -> Path:
    return Path(output_dir) / f"round-{r}"


def loadable_for_training(name: str, merged: Path) -> str:
    """`name` itself when training can load it; an adapter or checkpoint folder merged into `merged` (once)."""
    from vlmdpo.inference.checkpoint import is_checkpoint
    from vlmdpo.inference.names import is_named

    path = Path(name).expanduser()
    if is_named(name) or not path.is_dir():
        return name
    if not ((path / "adapter_config.json").is_file() or is_checkpoint(path)):
        return name
    if not (merged / "config.json").is_file():  # export writes beside and renames in: a folder there is whole
        from vlmdpo.export import export_model

        export_model(str(path), merged, device="cpu", force=merged.exists())
    return str(merged)


def round_start(output_dir: str | Path, start: str, r: int, reference: str) -> tuple[str, str | None]:
    """(the model round r's training loads, the run folder whose weights go into its policy, or None)."""
    base = loadable_for_training(start, round_dir(output_dir, 0) / "start-merged")
    previous = str(round_dir(output_dir, r - 1))
    if r == 1:
        return base, None
    if reference == "previous":
        return loadable_for_training(previous, round_dir(output_dir, r - 1) / "merged"), None
    return base, previous


def put_weights(run: Any, source: str) -> None:
    """The trained weights of the run folder `source` into `run`'s policy (adapter onto adapter, or all)."""
    model = run.acc.unwrap_model(run.model)
    if run.bundle.is_peft:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        file = Path(source) / "adapter_model.safetensors"
        if not file.is_file():
            raise FixableError(f"{source}: no adapter_model.safetensors to continue from",
                               "that round is not a finished LoRA run; delete its folder to train it again")
        loaded = set_peft_model_state_dict(model, load_file(str(file)))
        missing = [k for k in loaded.missing_keys if "lora_" in k]
        bad = list(loaded.unexpected_keys) + missing
    else:
        from vlmdpo.inference import load_for_inference

        weights = load_for_inference(source, device="cpu", dtype=next(model.parameters()).dtype).model.state_dict()
        try:
            loaded = model.load_state_dict(weights, strict=False)
        except RuntimeError as exc:  # shapes differ
            raise FixableError(f"{source}: its weights do not fit this round's model ({str(exc).splitlines()[0]})",
                               "continue with the settings that round was trained with, or a new output_dir") from None
        bad = list(loaded.unexpected_keys) + list(loaded.missing_keys)
    if bad:
        raise FixableError(f"{source}: its weights do not fit this round's policy ({len(bad)} names differ, e.g. "
                           f"{bad[0]})", "keep finetuning_type and the lora_* keys as they were for the earlier "
                           "rounds, or iterate into a new output_dir")


def train_round(values: dict[str, Any], start: str | None, *, say: Callable[[str], None] | None = None
                ) -> dict[str, Any]:
    """Train one round (values: a TrainConfig's keys) continuing from `start`'s weights when given;
    a run cut earlier resumes from its last checkpoint. Returns train_results.json's content."""
    import json

    from vlmdpo.config import build_config
    from vlmdpo.train.finish import finish
    from vlmdpo.train.loop import fit
    from vlmdpo.train.run import setup

    out = Path(values["output_dir"])
    done = out / "train_results.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    cfg = build_config({**values, "resume_from_checkpoint": "auto"}, source=f"{out.name} (iterate)")
    run = setup(cfg, echo=say)
    if start and run.resumed_from is None:  # a resumed run's checkpoint already holds the trained weights
        put_weights(run, start)
    finish(run, fit(run))
    return json.loads(done.read_text(encoding="utf-8"))
