"""A real (tiny, one-step) training run, for the tests that use what a run writes (chat, export, serve)."""
from __future__ import annotations

from pathlib import Path

import vlmdpo

SAMPLES = Path(vlmdpo.__file__).parent / "samples" / "trl"


def one_step_run(out: Path, *, save_steps: int) -> Path:
    """Train tiny:idefics3 for one LoRA step on the bundled sample pairs into `out`."""
    from vlmdpo.api import train

    train({"model_name_or_path": "tiny:idefics3", "dataset": str(SAMPLES / "prefs.jsonl"), "output_dir": str(out),
           "finetuning_type": "lora", "lora_rank": 4, "lora_alpha": 8, "max_length": 512, "learning_rate": 1e-2,
           "max_steps": 1, "per_device_train_batch_size": 2, "logging_steps": 1, "save_steps": save_steps,
           "progress_bar": False, "beta": 0.3})
    return out
