"""`vlmdpo iterate` on a tiny VLM for 2 rounds, judged by truth on demo colour rows: the record it writes,
where each round starts and what its reference is, resumption after a cut round, and bad config keys."""
from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import pytest

from vlmdpo.cli import main
from vlmdpo.config import ConfigError
from vlmdpo.config.iterate import load_iterate_config
from vlmdpo.engine.iterate import iterate


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> dict:
    from iterate_helpers import colour_rows, red_or_blue_model

    root = tmp_path_factory.mktemp("iterate")
    prompts, held_out = colour_rows(root, n_prompts=4, n_held_out=2)
    return dict(model_name_or_path=str(red_or_blue_model(root / "start")), dataset=str(prompts),
                test_dataset=str(held_out), max_steps=2, per_device_train_batch_size=8, learning_rate=5e-2,
                logging_steps=1, save_steps=None, progress_bar=False, max_length=512, seed=7, lora_rank=4,
                lora_alpha=8, lora_dropout=0.0, num_generations=4, temperature=1.0, max_new_tokens=2)


def _run(setting: dict, out: Path, reference: str, lines: list[str] | None = None):
    say = lines.append if lines is not None else (lambda _line: None)
    return iterate({**setting, "output_dir": str(out), "iterate_reference": reference}, 2, progress=False,
                   device="cpu", echo=say)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mean_chosen_logp(model: str, pairs: Path) -> float:
    """The mean summed log-prob of the pairs' chosen answers under `model`, as eval scores them."""
    from vlmdpo.data.load import load_preferences
    from vlmdpo.encode import encode_pair
    from vlmdpo.eval.preference import encode_records, pair_logps
    from vlmdpo.inference import load_for_inference
    from vlmdpo.model.families import adapter_for

    im = load_for_inference(model, device="cpu")
    family = adapter_for(im.base_model)
    encoded, _, dropped = encode_records(load_preferences(pairs).records,
                                         partial(encode_pair, processor=im.processor, family=family, max_length=512))
    assert not dropped
    lp = pair_logps(im.model, encoded, family=family, pad_token_id=im.tokenizer.pad_token_id)
    return lp.chosen_logps.double().mean().item()


def _first_step(run_dir: Path) -> dict:
    return next(r for r in _read(run_dir / "metrics.jsonl") if r.get("step") == 1)


@pytest.fixture(scope="module")
def previous_run(setting, tmp_path_factory):
    out = tmp_path_factory.mktemp("previous") / "out"
    return out, _run(setting, out, "previous")


def test_rounds_record_table_and_plot(previous_run):
    out, result = previous_run
    rows = _read(out / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2] == [r["round"] for r in result.rounds]
    assert rows[0]["reward_accuracy"] is None and 0 <= rows[0]["grounded_accuracy"] <= 1
    for r in rows[1:]:
        assert r["pairs"] >= 1 and r["pairs"] + r["ties"] + r["low_margin"] + r["one_answer"] == r["prompts"] == 4
        assert 0 <= r["reward_accuracy"] <= 1 and 0 <= r["grounded_accuracy"] <= 1 and r["train_loss"] > 0
        assert r["policy"] == str(out / f"round-{r['round']}") and r["train_steps"] == 2
    table = (out / "rounds.md").read_text()
    assert "| round | pairs made | dropped (one answer / ties / low margin) | train loss | held-out reward accuracy |" in table
    assert table.count("\n| ") == 4 and "| 0 (start) | — |" in table
    assert (out / "rounds.png").read_bytes()[:4] == b"\x89PNG"
    assert "held-out grounded accuracy" in result.table()


def test_previous_reference_round_2_starts_from_round_1(previous_run, setting):
    out, _ = previous_run
    r1, r2 = out / "round-1", out / "round-2"
    first = _first_step(r2)
    # round 2's policy starts as round 1's model, and its reference is that same model
    assert first["logps/chosen"] == pytest.approx(_mean_chosen_logp(str(r1), r2 / "pairs.jsonl"), abs=2e-2)
    assert first["rewards/chosen"] == 0.0 and first["rewards/rejected"] == 0.0
    start = _mean_chosen_logp(setting["model_name_or_path"], r2 / "pairs.jsonl")
    # round 1 changed the model (well beyond the 2e-2 tolerance above), so the check can fail
    assert abs(first["logps/chosen"] - start) > 0.05
    assert json.loads((r2 / "round.json").read_text())["train_base"] == str(r1 / "merged")


def test_base_reference_continues_round_1_against_a_tuned_start(setting, tmp_path):
    import vlmdpo

    # the start is a LoRA run's output (as the quickstart leaves one): merged once, and "the base" is that merge
    keys = ("max_length", "seed", "lora_rank", "lora_alpha", "lora_dropout", "progress_bar", "save_steps",
            "per_device_train_batch_size")
    tuned = vlmdpo.train({**{k: setting[k] for k in keys}, "model_name_or_path": setting["model_name_or_path"],
                          "dataset": setting["dataset"], "output_dir": str(tmp_path / "tuned"), "max_steps": 1,
                          "learning_rate": 5e-2}).output_dir
    out = tmp_path / "out"
    _run({**setting, "model_name_or_path": str(tuned)}, out, "base")
    r1, r2 = out / "round-1", out / "round-2"
    assert (out / "round-0" / "start-merged" / "config.json").is_file()
    first, beta = _first_step(r2), 0.1
    start = _mean_chosen_logp(str(tuned), r2 / "pairs.jsonl")
    round_1 = _mean_chosen_logp(str(r1), r2 / "pairs.jsonl")
    assert abs(round_1 - start) > 0.05  # well beyond the 2e-2 tolerances below
    assert first["logps/chosen"] == pytest.approx(round_1, abs=2e-2)  # the policy starts as round 1
    reference = first["logps/chosen"] - first["rewards/chosen"] / beta
    assert reference == pytest.approx(start, abs=2e-2)  # the reference is the start, not round 1
    assert not (r1 / "merged").exists()  # the adapter continues on the start: nothing to merge


def test_full_fine_tuning_against_the_base_puts_round_1_weights_into_round_2(setting, tmp_path):
    out = tmp_path / "out"
    full = {k: v for k, v in setting.items() if not k.startswith("lora_")}
    _run({**full, "finetuning_type": "full", "learning_rate": 1e-2}, out, "base")
    r1, r2 = out / "round-1", out / "round-2"
    assert (r2 / "model.safetensors").is_file() and not (r2 / "adapter_config.json").exists()
    first, beta = _first_step(r2), 0.1
    start = _mean_chosen_logp(setting["model_name_or_path"], r2 / "pairs.jsonl")
    round_1 = _mean_chosen_logp(str(r1), r2 / "pairs.jsonl")
    assert abs(round_1 - start) > 0.2
    assert first["logps/chosen"] == pytest.approx(round_1, abs=1e-2)
    assert first["logps/chosen"] - first["rewards/chosen"] / beta == pytest.approx(start, abs=1e-2)


def test_resume_after_a_cut_round_redoes_nothing_and_duplicates_nothing(previous_run, setting, tmp_path):
    done, _ = previous_run
    out = tmp_path / "out"
    shutil.copytree(done, out)
    r2 = out / "round-2"
    candidates = (r2 / "candidates.jsonl").read_text()
    # killed while sampling round 2: half a row on disk, nothing after it
    cut = candidates.index("\n", len(candidates) // 2) + 15
    (r2 / "candidates.jsonl").write_text(candidates[:cut])
    for name in ("scored.jsonl", "pairs.jsonl", "round.json", "metrics.jsonl", "train_results.json",
                 "adapter_model.safetensors", "adapter_config.json"):
        (r2 / name).unlink()
    shutil.rmtree(r2 / "eval")
    spent = float((r2 / "seconds.txt").read_text())  # the steps the cut run finished
    round_1 = {p: p.stat().st_mtime_ns for p in (out / "round-1").rglob("*") if p.is_file()}
    lines: list[str] = []
    result = _run({**setting, "model_name_or_path": setting["model_name_or_path"]}, out, "previous", lines)
    assert any("round 0: done earlier" in line for line in lines)
    assert any("round 1: done earlier" in line for line in lines)
    assert {p: p.stat().st_mtime_ns for p in (out / "round-1").rglob("*") if p.is_file()} == round_1
    assert (r2 / "candidates.jsonl").read_text() == candidates  # the same rows, none twice
    assert any("already there (resumed)" in line for line in lines)
    assert [r["round"] for r in _read(out / "rounds.jsonl")] == [0, 1, 2] == [r["round"] for r in result.rounds]
    assert result.rounds[2]["seconds"] > spent  # the time column counts both runs' share of the round
    ids = [r["id"] for r in _read(r2 / "scored.jsonl")]
    assert len(ids) == len(set(ids)) == 4


def test_a_changed_reference_over_earlier_rounds_is_refused(previous_run, setting, tmp_path, capsys):
    done, _ = previous_run
    out = tmp_path / "out"
    shutil.copytree(done, out)
    with pytest.raises(ValueError, match=r"round-0/round.json: that round was made with iterate_reference: previous"):
        _run(setting, out, "base")


def test_labels_judge_waits_for_people_then_trains(setting, tmp_path):
    out = tmp_path / "out"
    config = {**setting, "output_dir": str(out), "judge": "labels", "test_dataset": None}
    with pytest.raises(ValueError, match=r"round 1: waiting for labels: .*round-1/labels.jsonl does not exist yet"):
        iterate(config, 1, progress=False, device="cpu", echo=lambda _line: None)
    rows = _read(out / "round-1" / "candidates.jsonl")
    labels = []
    for r in rows[:-1]:  # the last row waits; best = the first answer, worst = the first other text
        worst = next((i for i, c in enumerate(r["candidates"]) if c != r["candidates"][0]), None)
        if worst is not None:
            labels.append({"id": r["id"], "best": 0, "worst": worst, "skip": False, "labeler": "t", "time": ""})
    labelled = [x["id"] for x in labels]
    (out / "round-1" / "labels.jsonl").write_text("".join(json.dumps(x) + "\n" for x in labels))
    with pytest.raises(ValueError, match=f"round 1: {len(rows) - len(labels)} rows not labelled yet"):
        iterate(config, 1, progress=False, device="cpu", echo=lambda _line: None)
    with (out / "round-1" / "labels.jsonl").open("a") as fh:
        for r in rows:
            if r["id"] not in labelled:
                fh.write(json.dumps({"id": r["id"], "best": None, "skip": True}) + "\n")
    result = iterate(config, 1, progress=False, device="cpu", echo=lambda _line: None)
    assert result.rounds[1]["pairs"] == len(labels) >= 1 and result.rounds[1]["ties"] == 0
    assert result.rounds[1]["unscored"] == 4 * (len(rows) - len(labels))
    assert result.rounds[0].get("grounded_accuracy") is None  # no held-out data: nothing evaluated
    assert [r["id"] for r in _read(out / "round-1" / "pairs.jsonl")] == labelled


@pytest.mark.parametrize("override, message", [
    ("num_generation=3", "unknown key 'num_generation' in command-line override; did you mean 'num_generations'?"),
    ("judge=humans", "judge: must be one of 'truth', 'model', 'implicit' or 'labels'"),
    ("num_generations=1", "num_generations: must be >= 2"),
    ("judge=model", "judge: model needs judge_model (a model to load) or judge_endpoint"),
    ("iterate_reference=last", "iterate_reference: must be one of 'previous' or 'base'"),
])
def test_bad_iterate_keys_name_the_key_and_the_fix(tmp_path, capsys, override, message):
    config = tmp_path / "it.yaml"
    config.write_text(f"model_name_or_path: tiny:idefics3\ndataset: {tmp_path / 'p.jsonl'}\n")
    assert main(["iterate", str(config), "--rounds", "1", override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "outputs").exists()


def test_iterate_keys_in_the_yaml_and_their_defaults(tmp_path):
    config = tmp_path / "it.yaml"
    config.write_text("model_name_or_path: tiny:idefics3\ndataset: d.jsonl\ntest_dataset: t.jsonl\n"
                      "num_generations: 6\njudge: labels\n")
    cfg = load_iterate_config(config)
    assert (cfg.num_generations, cfg.judge, cfg.iterate_reference, cfg.held_out, cfg.prompts) == \
        (6, "labels", "previous", "t.jsonl", "d.jsonl")
    assert "num_generations" not in cfg.train_values() and cfg.train_values()["dataset"] == "d.jsonl"
    with pytest.raises(ConfigError, match="unknown key 'num_generations'"):  # not a `vlmdpo train` key
        from vlmdpo.config import load_config

        load_config(config)


def test_max_samples_caps_the_prompts_and_every_pair_made_trains(setting, tmp_path):
    lines: list[str] = []
    out = tmp_path / "out"
    iterate({**setting, "output_dir": str(out), "max_samples": 2, "pair_strategy": "all", "num_generations": 8,
             "max_new_tokens": 3}, 1, progress=False,
            device="cpu", echo=lines.append)
    record = json.loads((out / "round-1" / "round.json").read_text())
    assert record["prompts"] == 2 and record["pairs"] > 2  # several pairs per prompt
    assert any(f"train data: read {record['pairs']}, kept {record['pairs']}" in line for line in lines), lines
