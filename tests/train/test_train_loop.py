"""End-to-end training on tiny models: what changes, what must not, and what is written."""
from __future__ import annotations

import math

import pytest
import torch

from train_helpers import SAMPLE_IMAGES, read_jsonl, tiny_config, write_text_prefs
from vlmdpo.train.loop import run_training


@pytest.fixture
def spy(monkeypatch):
    """Record the initial weights of the policy and the reference the loop builds."""
    import vlmdpo.inference as inference
    import vlmdpo.model.reference as ref_mod

    seen: dict = {}
    real_load, real_ref = inference.load_for_training, ref_mod.make_reference

    def load_for_training(name, **settings):
        b = real_load(name, **settings)
        seen["init"] = {n: p.detach().clone() for n, p in b.model.named_parameters()}
        seen["trainable"] = {n for n, p in b.model.named_parameters() if p.requires_grad}
        return b

    def make_reference(*args, **kwargs):
        r = real_ref(*args, **kwargs)
        seen["reference"] = r
        return r

    monkeypatch.setattr(inference, "load_for_training", load_for_training)
    monkeypatch.setattr(ref_mod, "make_reference", make_reference)
    return seen


def _changed(seen, model) -> tuple[set[str], set[str]]:
    now = dict(model.named_parameters())
    changed = {n for n, p0 in seen["init"].items() if not torch.equal(p0, now[n].detach())}
    return changed, seen["trainable"]


def test_lora_run_trains_only_adapters_and_writes_outputs(tmp_path, text_prefs, spy):
    cfg = tiny_config(tmp_path, text_prefs, val_size=2, eval_steps=2, report_to="tensorboard")
    res = run_training(cfg, echo=lambda _m: None)
    assert res.global_step == 4 and res.n_train_pairs == 6 and res.n_eval_pairs == 2
    changed, trainable = _changed(spy, res.model)
    assert trainable and all("lora_" in n for n in trainable)
    assert changed == trainable  # every adapter tensor moved, nothing else did (so the reference is intact)
    out = cfg.output_dir
    rows = read_jsonl(tmp_path / "out" / "metrics.jsonl")
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    for r in train_rows:
        assert math.isfinite(r["loss"]) and r["grad_norm"] > 0 and r["pairs/s"] > 0 and r["tokens/s"] > 0
        assert {"rewards/accuracies", "rewards/margins", "logps/chosen", "learning_rate", "peak_memory_gb"} <= set(r)
    assert train_rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 1
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert [r["step"] for r in rows if "eval_loss" in r] == [2, 4]
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer_config.json", "training_curves.png",
                 "train_results.json", "vlmdpo_config.yaml"):
        assert (tmp_path / "out" / name).is_file(), name
    assert list((tmp_path / "out").rglob("events.out.tfevents*")), "tensorboard events missing"
    assert res.plot_path is not None and res.plot_path.stat().st_size > 1000
    assert str(res.output_dir) == out


def test_full_finetune_vlm_keeps_vision_tower_and_reference_frozen(tmp_path, spy):
    cfg = tiny_config(tmp_path, SAMPLE_IMAGES, model_name_or_path="tiny:idefics3", finetuning_type="full",
                      max_steps=2, learning_rate=1e-3, max_length=512)
    res = run_training(cfg, echo=lambda _m: None)
    changed, trainable = _changed(spy, res.model)
    vision = {n for n in spy["init"] if "vision_model" in n}
    assert vision and not (vision & trainable) and not (vision & changed)
    assert changed and changed <= trainable
    ref = spy["reference"]
    assert ref is not None and ref.kind == "frozen_copy"
    ref_params = dict(ref.model.named_parameters())
    assert all(torch.equal(p0, ref_params[n]) for n, p0 in spy["init"].items())
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_dropped_pairs_are_reported_not_silent(tmp_path):
    data = write_text_prefs(tmp_path / "prefs.jsonl", n=6, long_row=3)
    cfg = tiny_config(tmp_path, data, max_length=160, truncation="drop", max_steps=1)
    messages: list[str] = []
    res = run_training(cfg, echo=messages.append)
    assert [d.id for d in res.dropped] == ["p3"] and res.n_train_pairs == 5
    assert any("dropped 1 of 6 pairs" in m for m in messages)
    rows = read_jsonl(tmp_path / "out" / "dropped_pairs.jsonl")
    assert len(rows) == 1 and rows[0]["id"] == "p3" and rows[0]["split"] == "train" and "prefs.jsonl:4" in rows[0][
        "source"]


def test_reference_free_loss_builds_no_reference(tmp_path, text_prefs, spy):
    cfg = tiny_config(tmp_path, text_prefs, loss_type="simpo", beta=2.0, max_steps=2)
    res = run_training(cfg, echo=lambda _m: None)
    assert "reference" not in spy  # make_reference was never called
    assert math.isfinite(res.train_metrics["loss"])
