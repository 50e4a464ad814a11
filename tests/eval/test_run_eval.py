"""End to end on a tiny model: demo data -> 2 training steps -> `vlmdpo eval` -> report files."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from vlmdpo.api import train
    from vlmdpo.demo_data import make_demo_data

    root = tmp_path_factory.mktemp("run")
    ds = make_demo_data(root / "demo", n_train=8, n_val=0, n_test=8, n_pool=0, progress=False)
    cfg = {
        "model_name_or_path": "tiny:idefics3", "dataset": str(ds.files["train"]),
        "test_dataset": str(ds.files["test"]), "output_dir": str(root / "out"), "max_steps": 2,
        "per_device_train_batch_size": 4, "learning_rate": 1e-3, "freeze_vision_tower": False,
        "logging_steps": 1, "save_steps": None, "progress_bar": False, "max_length": 512, "seed": 0,
    }
    train(cfg)
    return root, cfg


def test_eval_writes_report_and_sane_numbers(trained):
    from vlmdpo.eval.run import run_eval

    root, cfg = trained
    msgs = []
    result = run_eval(cfg, max_new_tokens=4, batch_size=4, n_examples=4, progress=False, echo=msgs.append)
    out = root / "out" / "eval"
    assert result.output_dir == out
    for name in ("eval.json", "answers.jsonl", "report.html", "base_vs_tuned.png", "examples.png",
                 "training_curves.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "eval.json").read_text())
    base, tuned = summary["models"]["base"], summary["models"]["tuned"]
    assert base["preference"]["reward_accuracy"] == 0.5  # the base against itself: all rewards 0
    assert base["preference"]["reward_margin"] == 0.0
    assert base["preference"]["n"] == tuned["preference"]["n"] == 8
    assert set(base["preference"]["by_group"]) == {"color", "count", "position", "shape"}
    assert tuned["preference"]["reward_margin"] != 0.0  # training moved the weights
    assert base["grounded"]["n"] == 8 and 0.0 <= tuned["grounded"]["accuracy"] <= 1.0
    assert [t["name"] for t in summary["targets"]] == ["tuned held-out reward accuracy",
                                                      "grounded-answer accuracy gain (tuned - base)"]
    rows = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {"base_answer", "tuned_answer", "truth", "kind"} <= set(rows[0])
    assert any("held-out data: read 8, kept 8" in m for m in msgs)


def test_eval_from_model_dir_alone_and_no_generate(trained, tmp_path):
    from vlmdpo.eval.run import run_eval

    root, _ = trained
    result = run_eval(model=str(root / "out"), output=str(tmp_path / "e"), generate=False, progress=False,
                      echo=lambda _m: None)
    assert "grounded" not in result.summary["models"]["tuned"]
    assert (tmp_path / "e" / "report.html").is_file() and not (tmp_path / "e" / "examples.png").exists()


def test_eval_without_data_or_model_says_what_to_pass(tmp_path):
    from vlmdpo.eval.run import EvalError, run_eval

    with pytest.raises(EvalError, match="--model DIR"):
        run_eval(None)
    with pytest.raises(EvalError, match="no vlmdpo_config.yaml"):
        run_eval(model=str(tmp_path))
    with pytest.raises(EvalError, match="test_dataset"):
        run_eval({"model_name_or_path": "tiny:idefics3", "dataset": "x.jsonl", "output_dir": str(tmp_path)})


def test_cli_eval_prints_summary(trained, capsys):
    from vlmdpo.cli import main

    root, cfg = trained
    rc = main(["eval", "--model", str(root / "out"), "--no-generate", "-o", str(root / "cli_eval")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "reward accuracy" in printed and "report:" in printed


def test_scores_are_shared_between_calls_and_the_start_is_scored_once(trained, tmp_path, monkeypatch):
    import vlmdpo.inference as inference
    from vlmdpo.eval.run import run_eval

    root, cfg = trained
    loaded = []
    real = inference.load_for_inference
    monkeypatch.setattr(inference, "load_for_inference", lambda name, **kw: loaded.append(name) or real(name, **kw))
    settings = dict(max_new_tokens=4, batch_size=4, progress=False, echo=lambda _m: None)
    scores: dict = {}
    start = run_eval(cfg, model=cfg["model_name_or_path"], output=str(tmp_path / "start"), scores=scores, **settings)
    assert loaded == ["tiny:idefics3"]  # the start against itself: one load, one scoring
    assert start.summary["models"]["base"] == start.summary["models"]["tuned"]
    shared = run_eval(cfg, output=str(tmp_path / "shared"), scores=scores, **settings)
    assert loaded == ["tiny:idefics3", str(root / "out")]  # the base's scores came from the first call
    fresh = run_eval(cfg, output=str(tmp_path / "fresh"), **settings)
    assert shared.summary["models"] == fresh.summary["models"]
    assert (tmp_path / "shared" / "answers.jsonl").read_text() == (tmp_path / "fresh" / "answers.jsonl").read_text()
