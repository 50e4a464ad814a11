"""Damaged run files: one line naming the file and the fix (never a traceback or `internal error`);
a partial last line of metrics.jsonl (a kill while logging) is dropped on resume."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from train_helpers import read_jsonl, write_text_prefs
from vlmdpo.cli import main


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A config and a 2-step run with checkpoints 1 and 2; each test works on a copy."""
    root = tmp_path_factory.mktemp("run")
    data = write_text_prefs(root / "prefs.jsonl", n=8)
    values = dict(model_name_or_path="tiny:causal_lm", dataset=str(data), output_dir="OUT", max_steps=2,
                  per_device_train_batch_size=2, learning_rate=5e-3, logging_steps=1, save_steps=1,
                  progress_bar=False, max_length=256, seed=7, lora_rank=4, lora_alpha=8)
    (root / "config.yaml").write_text(yaml.safe_dump(values))
    assert main(["train", str(root / "config.yaml"), f"output_dir={root / 'out'}"]) == 0
    return root


def _resume(finished: Path, tmp_path: Path, damage, capsys, *, max_steps: int = 3) -> tuple[int, str, Path]:
    out = tmp_path / "out"
    shutil.copytree(finished / "out", out)
    damage(out)
    capsys.readouterr()
    code = main(["train", str(finished / "config.yaml"), f"output_dir={out}", f"max_steps={max_steps}",
                 "resume_from_checkpoint=auto", "resume_allow_changes=[max_steps]"])
    return code, capsys.readouterr().err, out


def _truncate(name: str):
    def damage(out: Path) -> None:
        p = out / "checkpoint-2" / name
        p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)])
    return damage


DAMAGES = {
    "model.safetensors": _truncate("model.safetensors"),
    "optimizer.safetensors": lambda out: (out / "checkpoint-2" / "optimizer.safetensors").write_bytes(b""),
    "optimizer.json": _truncate("optimizer.json"),
    "scheduler.json": lambda out: (out / "checkpoint-2" / "scheduler.json").write_text("[1, 2]"),
    "trainer_state.json": lambda out: (out / "checkpoint-2" / "trainer_state.json").write_text('{"global_st'),
    "run.json": lambda out: (out / "checkpoint-2" / "run.json").write_text("{"),
    "rng_0.safetensors": lambda out: (out / "checkpoint-2" / "rng_0.safetensors").unlink(),
}


@pytest.mark.parametrize("name", list(DAMAGES))
def test_damaged_checkpoint_file_is_named_with_the_fix(finished, tmp_path, capsys, name):
    code, err, out = _resume(finished, tmp_path, DAMAGES[name], capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert str(out / "checkpoint-2" / name) in lines[0] and "internal error" not in err
    assert f"resume_from_checkpoint={out / 'checkpoint-1'}" in lines[0]


def test_partial_last_metrics_line_is_dropped_on_resume(finished, tmp_path, capsys):
    def cut(out: Path) -> None:
        with open(out / "metrics.jsonl", "a") as f:
            f.write('{"step": 3, "loss": 0.69, "rewa')

    code, err, out = _resume(finished, tmp_path, cut, capsys)
    assert code == 0, err
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]


def test_damaged_metrics_line_names_file_and_line(finished, tmp_path, capsys):
    def garble(out: Path) -> None:
        lines = (out / "metrics.jsonl").read_text().splitlines()
        (out / "metrics.jsonl").write_text("\n".join([lines[0][:10], *lines[1:]]) + "\n")

    code, err, out = _resume(finished, tmp_path, garble, capsys)
    assert code == 2 and f"{out / 'metrics.jsonl'}:1: not a JSON line" in err and "delete line 1" in err
