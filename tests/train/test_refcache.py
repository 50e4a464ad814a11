"""Precomputed reference log-probs: equal to the live reference, cached, reused, keyed correctly."""
from __future__ import annotations

import math
import shutil

import pytest

from train_helpers import SAMPLE_IMAGES, read_jsonl, tiny_config
from vlmdpo.train.loop import run_training
from vlmdpo.train.refcache import cache_key

quiet = dict(echo=lambda _m: None)


@pytest.fixture
def count_reference_calls(monkeypatch):
    from vlmdpo.model.reference import Reference

    calls = {"n": 0}
    real = Reference.logps

    def counted(self, batch):
        calls["n"] += 1
        return real(self, batch)

    monkeypatch.setattr(Reference, "logps", counted)
    return calls


def _losses(path):
    return [r["loss"] for r in read_jsonl(path / "metrics.jsonl") if "loss" in r]


def test_cache_matches_live_reference_and_is_reused(tmp_path, text_prefs, count_reference_calls):
    live = run_training(tiny_config(tmp_path / "live", text_prefs, max_steps=3), **quiet)
    assert count_reference_calls["n"] == 3  # one reference forward per step
    cache_dir = tmp_path / "cache"
    first = run_training(tiny_config(tmp_path / "r1", text_prefs, max_steps=3, precompute_ref_log_probs=True,
                                     ref_cache_dir=str(cache_dir), val_size=2, eval_steps=3), **quiet)
    assert not first.ref_cache_reused and first.ref_cache_path.parent == cache_dir
    assert len(list(cache_dir.glob("ref-*.pt"))) == 2  # train and eval sets
    n_after_first = count_reference_calls["n"]
    msgs: list[str] = []
    second = run_training(tiny_config(tmp_path / "r2", text_prefs, max_steps=3, precompute_ref_log_probs=True,
                                      ref_cache_dir=str(cache_dir), val_size=2, eval_steps=3), echo=msgs.append)
    assert second.ref_cache_reused and second.ref_cache_path == first.ref_cache_path
    assert count_reference_calls["n"] == n_after_first  # the reference model never ran
    assert any("reusing" in m for m in msgs)
    assert _losses(tmp_path / "r1" / "out") == _losses(tmp_path / "r2" / "out")
    # val_size changes which pairs train, so compare the no-val live run with a cached no-val run
    third = run_training(tiny_config(tmp_path / "r3", text_prefs, max_steps=3, precompute_ref_log_probs=True,
                                     ref_cache_dir=str(cache_dir)), **quiet)
    assert not third.ref_cache_reused  # different pairs -> different key
    assert _losses(tmp_path / "r3" / "out") == pytest.approx(_losses(tmp_path / "live" / "out"), abs=1e-6)
    assert live.global_step == third.global_step == 3


def test_precompute_works_with_images_and_defaults_next_to_output_dir(tmp_path):
    cfg = tiny_config(tmp_path, SAMPLE_IMAGES, model_name_or_path="tiny:idefics3", max_steps=1,
                      precompute_ref_log_probs=True, max_length=512)
    res = run_training(cfg, **quiet)
    assert res.ref_cache_path.parent == tmp_path / ".vlmdpo_ref_cache" and res.ref_cache_path.is_file()
    # at step 1 the policy equals the reference, so the cached values give exactly log 2
    assert _losses(tmp_path / "out")[0] == pytest.approx(math.log(2), abs=1e-5)


def test_cache_key_tracks_what_the_numbers_depend_on(tmp_path):
    from vlmdpo.data.load import load_preferences
    from vlmdpo.model.tiny import build_tiny_processor

    data = tmp_path / "d"
    shutil.copytree(SAMPLE_IMAGES.parent, data)
    recs = load_preferences(str(data / "prefs.jsonl")).records
    proc = build_tiny_processor("idefics3")
    cfg = tiny_config(tmp_path, data / "prefs.jsonl", model_name_or_path="tiny:idefics3")
    keep = list(range(len(recs)))
    k = cache_key(cfg, proc, recs, keep)
    assert k == cache_key(cfg, proc, recs, keep)
    assert k != cache_key(cfg.model_copy(update={"max_length": 100}), proc, recs, keep)
    assert k != cache_key(cfg.model_copy(update={"model_name_or_path": "tiny:qwen2_vl"}), proc, recs, keep)
    assert k != cache_key(cfg, proc, recs, keep[1:])
    recs[0].chosen[0]["content"][0]["text"] += "!"
    k2 = cache_key(cfg, proc, recs, keep)
    assert k2 != k
    img = recs[1].images[0].path
    with open(img, "ab") as f:  # same name, different file
        f.write(b"\0")
    assert cache_key(cfg, proc, recs, keep) != k2
