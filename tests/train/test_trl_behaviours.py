"""TRL / HF TrainingArguments behaviours: eval_strategy / save_strategy, load_best_model_at_end with
metric_for_best_model, and the config errors HF gives for them."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import read_jsonl, tiny_config, write_text_prefs
from vlmdpo.train.loop import run_training

quiet = dict(echo=lambda _m: None)


def _eval_steps(out) -> list[int]:
    return [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "eval_loss" in r]


def _checkpoints(out) -> list[str]:
    return sorted((p.name for p in out.glob("checkpoint-*")), key=lambda n: int(n.split("-")[1]))


# 8 pairs, val_size 2 -> 6 train pairs, batch 2 -> 3 steps per epoch; max_steps 6 = two epochs
@pytest.mark.parametrize("keys, evals, checkpoints", [
    (dict(eval_strategy="epoch", save_strategy="epoch"), [3, 6], ["checkpoint-3", "checkpoint-6"]),
    (dict(eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=4), [2, 4, 6], ["checkpoint-4"]),
    (dict(eval_strategy="steps", logging_steps=5, save_strategy="no", save_steps=2), [5, 6], []),
    (dict(eval_strategy="no", eval_steps=2), [], []),
    (dict(), [3, 6], []),  # no strategy given: as before (each epoch end; save_steps null = no checkpoints)
])
def test_eval_and_save_strategies(tmp_path, keys, evals, checkpoints):
    data = write_text_prefs(tmp_path / "prefs.jsonl", n=8)
    res = run_training(tiny_config(tmp_path, data, max_steps=6, val_size=2, **keys), **quiet)
    out = tmp_path / "out"
    assert _eval_steps(out) == evals
    assert _checkpoints(out) == checkpoints
    assert bool(res.eval_metrics) == bool(evals)


def test_load_best_model_at_end_restores_the_best_accuracy(tmp_path, monkeypatch):
    import vlmdpo.train.loop as loop_mod

    # accuracy is best at the 2nd evaluation while the loss keeps falling: the metric decides
    script = iter([(0.9, 0.25), (0.8, 0.75), (0.7, 0.5), (0.6, 0.5)])

    def fake_evaluate(*_a, **_k):
        loss, acc = next(script)
        return {"loss": loss, "rewards/accuracies": acc}

    monkeypatch.setattr(loop_mod, "evaluate", fake_evaluate)
    data = write_text_prefs(tmp_path / "prefs.jsonl", n=8)
    cfg = tiny_config(tmp_path, data, max_steps=4, val_size=2, eval_strategy="steps", eval_steps=1,
                      save_strategy="steps", save_steps=1, save_total_limit=1, load_best_model_at_end=True,
                      metric_for_best_model="rewards/accuracies")
    assert cfg.best_metric == "eval_rewards/accuracies" and cfg.best_is_greater
    msgs: list[str] = []
    res = run_training(cfg, echo=msgs.append)
    assert res.global_step == 4 and not res.stopped_early
    assert res.best_metric == 0.75 and res.best_eval_loss == 0.6
    assert res.best_checkpoint is not None and res.best_checkpoint.name == "checkpoint-2"
    assert _checkpoints(tmp_path / "out") == ["checkpoint-2", "checkpoint-4"]  # the best survives rotation
    assert any("restoring the best model (eval_rewards/accuracies 0.75)" in m for m in msgs)
    best = load_file(str(res.best_checkpoint / "model.safetensors"))
    final = {n: p.detach() for n, p in res.model.named_parameters() if p.requires_grad}
    assert best.keys() == final.keys()
    assert all(torch.equal(best[k], final[k]) for k in best), "final model is not the best checkpoint"


def test_greater_is_better_is_inferred_as_hf_does(tmp_path):
    from vlmdpo.config import load_config

    base = dict(model_name_or_path="tiny:causal_lm", dataset="x.jsonl")
    assert load_config(None, base).best_metric == "eval_loss"
    assert not load_config(None, base).best_is_greater
    assert not load_config(None, {**base, "metric_for_best_model": "eval_sft_loss"}).best_is_greater
    assert load_config(None, {**base, "metric_for_best_model": "loss", "greater_is_better": True}).best_is_greater


@pytest.mark.parametrize("keys, message", [
    (dict(load_best_model_at_end=True, val_size=2, eval_strategy="epoch", save_steps=10),
     "load_best_model_at_end: needs save_strategy equal to eval_strategy (save steps, eval epoch)"),
    (dict(load_best_model_at_end=True, val_size=2, eval_steps=3, save_steps=10),
     "load_best_model_at_end: save_steps (10) must be a multiple of eval_steps (3)"),
    (dict(load_best_model_at_end=True, save_strategy="epoch", eval_strategy="epoch"),
     "load_best_model_at_end: needs evaluation data; set eval_dataset or val_size"),
    (dict(save_strategy="steps", save_steps=None), "save_strategy: steps needs save_steps"),
    (dict(eval_strategy="often"), "eval_strategy"),
    (dict(eval_strategy="steps"), "eval_strategy: steps needs evaluation data; set eval_dataset or val_size"),
])
def test_config_errors(keys, message):
    from vlmdpo.config import load_config

    with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, dict(model_name_or_path="tiny:causal_lm", dataset="x.jsonl", **keys))


def test_max_prompt_length_drops_image_pairs_it_would_cut_and_trains_on_the_rest(tmp_path):
    import json

    from train_helpers import SAMPLE_IMAGES

    rows = [json.loads(line) for line in SAMPLE_IMAGES.read_text().splitlines()]
    with_images = {r["id"] for r in rows if r.get("images")}
    assert 0 < len(with_images) < len(rows)
    cfg = tiny_config(tmp_path, SAMPLE_IMAGES, model_name_or_path="tiny:idefics3", max_prompt_length=8, max_steps=1)
    res = run_training(cfg, **quiet)
    assert res.n_train_pairs == len(rows) - len(with_images)  # text-only prompts are cut to 8 tokens and kept
    dropped = read_jsonl(tmp_path / "out" / "dropped_pairs.jsonl")
    assert {d["id"] for d in dropped} == with_images and {d["kind"] for d in dropped} == {"prompt_too_long"}
    assert all("max_prompt_length=8" in d["message"] and "image tokens are never cut" in d["message"]
               for d in dropped)
