"""The loss table: its facts are the ones compute_loss acts on, and config / metrics / docs read them."""
from __future__ import annotations

import pytest
import torch

from vlmdpo.config import ConfigError, TrainConfig, load_config
from vlmdpo.losses import LOSS_SPECS, LOSS_TYPES, LossSettings, compute_loss, metric_names, needs_reference
from vlmdpo.losses.table import PairTerms
from vlmdpo.types import LogpPair

BASE = ["model_name_or_path=tiny:causal_lm", "dataset=prefs.jsonl"]


def lp(scale: float = 1.0) -> LogpPair:
    c, r = torch.tensor([-3.0, -5.0]) * scale, torch.tensor([-4.0, -2.5]) * scale
    n = torch.tensor([3.0, 4.0])
    return LogpPair(c, r, n, n + 1, c * 0.5, r * 0.5)


def test_names_and_flags_are_unchanged():
    assert LOSS_TYPES == ("sigmoid", "ipo", "hinge", "robust", "exo_pair", "bco_pair", "sppo_hard", "nca_pair",
                          "apo_zero", "apo_down", "sft", "simpo", "orpo")
    assert {n for n, s in LOSS_SPECS.items() if not s.needs_reference} == {"simpo", "orpo", "sft"}
    assert {n for n, s in LOSS_SPECS.items() if s.length_normalised} == {"simpo", "orpo"}
    assert needs_reference(["simpo", "sigmoid"]) and not needs_reference(["orpo", "sft"])


class _Reads:
    """Settings that record which keys a loss reads."""

    def __init__(self):
        self.read: set[str] = set()

    def __getattr__(self, key):
        self.read.add(key)
        return {"beta": 0.3, "label_smoothing": 0.1, "simpo_gamma": 0.5}[key]


@pytest.mark.parametrize("name", LOSS_TYPES)
def test_each_loss_reads_only_the_config_keys_it_declares(name):
    spec = LOSS_SPECS[name]
    assert set(spec.params) <= set(TrainConfig.model_fields)
    t = torch.tensor([-1.0, -2.0])
    terms = PairTerms(t, t - 1, t.abs() + 1, t.abs() + 2, t * 0.1, t * -0.1, torch.tensor(1.5), 0.2)
    settings = _Reads()
    per = spec.per_pair(terms, settings)
    assert per.shape == (2,) and torch.isfinite(per).all()
    assert settings.read <= set(spec.params)


@pytest.mark.parametrize("types", [[t] for t in LOSS_TYPES] + [["sigmoid", "bco_pair", "sft"], ["orpo", "simpo"],
                                                                 ["ipo", "orpo"]])
@pytest.mark.parametrize("rpo_alpha", [None, 0.0, 0.5])
def test_metric_names_are_what_compute_loss_returns(types, rpo_alpha):
    ref = lp(1.1) if needs_reference(types) else None
    _, metrics = compute_loss(lp(), ref, loss_type=types, label_smoothing=0.1, rpo_alpha=rpo_alpha)
    assert metric_names(types, rpo_alpha) == sorted(metrics)


def test_loss_settings_from_config_and_its_metric_keys():
    cfg = load_config(None, BASE + ["loss_type=[sigmoid, orpo]", "rpo_alpha=0.5"])
    settings = LossSettings.from_config(cfg)
    assert settings.loss_type == ["sigmoid", "orpo"] and settings.beta == cfg.beta
    assert settings.metric_keys() == sorted(compute_loss(lp(), lp(1.1), **settings.kwargs())[1])
    assert "log_odds_ratio" in settings.metric_keys() and "loss/orpo" in settings.metric_keys()


def test_requirements_reach_the_config_with_the_value():
    with pytest.raises(ConfigError, match=r"label_smoothing: the exo_pair loss needs it > 0 \(got 0.0\)"):
        load_config(None, BASE + ["loss_type=exo_pair"])
    with pytest.raises(ConfigError) as e:
        load_config(None, BASE + ["loss_type=[exo_pair, robust, robust]", "label_smoothing=0.7"])
    text = str(e.value)
    assert text.count("the robust loss needs it in [0, 0.5) (got 0.7); try 0.1") == 1
    assert "label_smoothing: must be in [0, 1)" not in text
