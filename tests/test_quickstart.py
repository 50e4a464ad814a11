"""`vlmdpo quickstart`: the packaged recipe, and the four steps end to end on a tiny model."""
from __future__ import annotations

import json

import pytest

from vlmdpo.cli import main


def test_recipe_is_a_valid_config_with_paths_under_the_output(tmp_path):
    from vlmdpo.quickstart import quickstart_config, recipe_path

    assert recipe_path().is_file()
    cfg = quickstart_config(tmp_path / "qs", ["max_steps=5"])
    assert cfg.model_name_or_path == "builtin:nano-smolvlm"
    assert cfg.dataset == str(tmp_path / "qs" / "data" / "train.jsonl")
    assert cfg.test_dataset == str(tmp_path / "qs" / "data" / "test.jsonl")
    assert cfg.output_dir == str(tmp_path / "qs" / "model")
    assert cfg.max_steps == 5 and cfg.loss_type == "sigmoid" and cfg.rpo_alpha > 0
    assert not cfg.freeze_vision_tower and cfg.finetuning_type == "lora"


def test_quickstart_runs_all_steps_and_records_them(tmp_path):
    from vlmdpo.quickstart import STEPS, format_timings, run_quickstart

    msgs: list[str] = []
    res = run_quickstart(tmp_path / "qs", demo_sizes={"n_train": 8, "n_val": 4, "n_test": 8, "n_pool": 4}, progress=False,
                         echo=msgs.append,
                         overrides={"model_name_or_path": "tiny:idefics3", "max_steps": 2, "eval_steps": 1,
                                    "max_length": 512, "progress_bar": False, "learning_rate": 1e-3})
    assert res.report_path == tmp_path / "qs" / "model" / "eval" / "report.html" and res.report_path.is_file()
    record = json.loads((tmp_path / "qs" / "quickstart.json").read_text())
    assert set(record["seconds"]) == {*STEPS, "total"}
    assert record["seconds"]["model build"] == 0.0  # not a builtin model: nothing to build
    assert record["seconds"]["total"] >= record["seconds"]["training"] > 0
    assert record["models"]["base"]["reward_accuracy"] == 0.5  # the base against itself
    assert 0.0 <= record["models"]["tuned"]["grounded_accuracy"] <= 1.0
    assert [t["name"] for t in record["targets"]] == ["tuned held-out reward accuracy",
                                                     "grounded-answer accuracy gain (tuned - base)"]
    assert any(m.startswith("[4/4] evaluation:") for m in msgs)
    assert "total" in format_timings(res.seconds)
    steps = [json.loads(x)["step"] for x in (tmp_path / "qs" / "model" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2

    # a second run over the same folder reuses the data and trains afresh
    msgs.clear()
    again = run_quickstart(tmp_path / "qs", demo_sizes={"n_train": 8, "n_val": 4, "n_test": 8, "n_pool": 4}, progress=False,
                           echo=msgs.append,
                           overrides={"model_name_or_path": "tiny:idefics3", "max_steps": 2, "eval_steps": 1,
                                      "max_length": 512, "progress_bar": False, "learning_rate": 1e-3})
    assert any(m.startswith("reused train 8") for m in msgs)
    rows = [json.loads(x) for x in (tmp_path / "qs" / "model" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == steps  # the old run's rows were replaced, not appended to
    assert again.summary["models"]["tuned"]["preference"] == res.summary["models"]["tuned"]["preference"]


def test_unknown_builtin_model_is_a_clear_error_before_training(tmp_path):
    from vlmdpo.model.builtin import BuiltinModelError
    from vlmdpo.quickstart import run_quickstart

    with pytest.raises(BuiltinModelError, match="unknown built-in model"):
        run_quickstart(tmp_path / "qs", demo_sizes={"n_train": 4, "n_val": 0, "n_test": 4, "n_pool": 0}, progress=False,
                       echo=lambda _m: None, overrides={"model_name_or_path": "builtin:giant"})
    assert not (tmp_path / "qs" / "model").exists()


def test_cli_rejects_a_bad_override_before_doing_any_work(tmp_path, capsys):
    rc = main(["quickstart", "-o", str(tmp_path / "qs"), "max_step=3"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "max_step" in err and "max_steps" in err  # did you mean
    assert not (tmp_path / "qs" / "data").exists()


@pytest.mark.parametrize("argv", [["quickstart", "--help"]])
def test_quickstart_is_listed_first_in_help(argv, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.index("quickstart") < out.index("train")


def test_examples_quickstart_is_the_packaged_recipe():
    from pathlib import Path

    from vlmdpo.config import load_config
    from vlmdpo.quickstart import recipe_path

    example = Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml"
    assert example.read_text() == recipe_path().read_text()
    cfg = load_config(example)
    assert cfg.dataset == "runs/demo/train.jsonl" and cfg.output_dir == "runs/quickstart/model"


def test_iterate_demo_recipe_continues_the_quickstart_on_its_pool_and_held_out_split():
    from vlmdpo.config.iterate import load_iterate_config
    from vlmdpo.quickstart import recipe_path

    cfg = load_iterate_config(recipe_path().with_name("iterate_demo.yaml"), [], say=lambda _m: None)
    assert cfg.model_name_or_path == "runs/quickstart/model"  # the quickstart's tuned model
    assert cfg.prompts == "runs/quickstart/data/pool.jsonl"  # sampled prompts: the pool, never the test split
    assert cfg.held_out == "runs/quickstart/data/test.jsonl"
    assert cfg.judge == "truth" and cfg.num_generations >= 2
