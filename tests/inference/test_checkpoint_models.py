"""A `checkpoint-N` folder is a model everywhere a model folder is: chat, eval, compare, export, runs list."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

import vlmdpo

SAMPLES = Path(vlmdpo.__file__).parent / "samples" / "trl"
RUN = {"model_name_or_path": "tiny:idefics3", "dataset": str(SAMPLES / "prefs.jsonl"), "val_size": 2,
       "max_length": 512, "learning_rate": 1e-2, "max_steps": 2, "per_device_train_batch_size": 2,
       "logging_steps": 1, "save_steps": 1, "eval_steps": 1, "progress_bar": False, "beta": 0.3}


def _train(out: Path, **extra) -> Path:
    from vlmdpo.api import train

    train({**RUN, "output_dir": str(out), **extra})
    return out


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("ckrun") / "out", finetuning_type="lora", lora_rank=4, lora_alpha=8)


def test_checkpoint_loads_with_its_trained_tensors(lora_run: Path):
    from safetensors.torch import load_file

    from vlmdpo.inference import load_for_inference

    im = load_for_inference(lora_run / "checkpoint-1", device="cpu")
    assert im.kind == "checkpoint" and im.base_name == "tiny:idefics3"
    saved = load_file(str(lora_run / "checkpoint-1" / "model.safetensors"))
    params = dict(im.model.named_parameters())
    assert saved and all(torch.equal(params[k], v) for k, v in saved.items())


def test_chat_and_compare_on_a_checkpoint(lora_run: Path, tmp_path: Path):
    from vlmdpo.chat import run_chat
    from vlmdpo.compare import run_compare
    from vlmdpo.inference import GenerationSettings

    settings = GenerationSettings(max_new_tokens=3)
    reply = run_chat(str(lora_run / "checkpoint-2"), prompt="What shape?", settings=settings, device="cpu",
                     stdout=io.StringIO())
    assert isinstance(reply, str)
    out = io.StringIO()
    result = run_compare(None, str(lora_run / "checkpoint-2"), prompt="What shape?", out=tmp_path / "c.html",
                         settings=settings, device="cpu", stdout=out)  # the base found from the checkpoint's run
    assert result.base_name == "tiny:idefics3" and result.beta == 0.3 and (tmp_path / "c.html").is_file()


def test_eval_on_a_checkpoint(lora_run: Path, tmp_path: Path):
    from vlmdpo.eval.run import run_eval

    res = run_eval(model=str(lora_run / "checkpoint-1"), dataset=str(SAMPLES / "prefs.jsonl"), output=str(tmp_path),
                   generate=False, device="cpu", progress=False, echo=lambda _m: None)
    assert res.summary["settings"]["base model"] == "tiny:idefics3"
    assert "tuned" in res.summary["models"] and (tmp_path / "eval.json").is_file()
    assert (tmp_path / "training_curves.png").is_file()  # the run's curves, from the log in the checkpoint's parent


def test_export_of_a_lora_checkpoint_merges_it(lora_run: Path, tmp_path: Path):
    from transformers import AutoModelForImageTextToText

    from vlmdpo.export import export_model
    from vlmdpo.inference import load_for_inference

    res = export_model(str(lora_run / "checkpoint-2"), tmp_path / "merged")
    assert res.merged and not (tmp_path / "merged" / "adapter_config.json").exists()
    plain = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    ck = load_for_inference(lora_run / "checkpoint-2", device="cpu")
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, ck.model(input_ids=ids).logits, atol=1e-4)
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "beta: 0.3" in card and "![training curves](training_curves.png)" in card
    assert (tmp_path / "merged" / "training_curves.png").is_file()


def test_runs_list_shows_checkpoints_and_marks_the_best(lora_run: Path, capsys):
    from vlmdpo.cli import main

    assert main(["runs", "list", str(lora_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {Path(line.split()[0]).name: line.split() for line in lines[1:]}
    assert set(rows) == {"checkpoint-1", "checkpoint-2", lora_run.name}
    assert rows["checkpoint-1"][1] == "1" and rows["checkpoint-2"][1] == "2"
    metrics = [json.loads(x) for x in (lora_run / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in metrics if "eval_loss" in r}
    assert float(rows["checkpoint-1"][2]) == pytest.approx(evals[1]["eval_loss"], abs=1e-4)
    assert float(rows["checkpoint-2"][3]) == pytest.approx(evals[2]["eval_rewards/accuracies"], abs=1e-3)
    best = min((1, 2), key=lambda s: evals[s]["eval_loss"])
    assert [name for name, r in rows.items() if r[-1] == "best"] == [f"checkpoint-{best}"]


def test_export_of_a_full_finetuning_checkpoint(tmp_path: Path):
    from vlmdpo.export import export_model
    from vlmdpo.inference import load_for_inference

    run = _train(tmp_path / "full", finetuning_type="full", max_steps=1, eval_steps=None, val_size=0)
    res = export_model(str(run / "checkpoint-1"), tmp_path / "exported")
    assert not res.merged and (tmp_path / "exported" / "config.json").is_file()
    exported = load_for_inference(tmp_path / "exported", device="cpu")
    ck = load_for_inference(run / "checkpoint-1", device="cpu")
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        assert torch.allclose(exported.model(input_ids=ids).logits, ck.model(input_ids=ids).logits, atol=1e-4)
