"""TrainConfig: YAML + key=value overrides, defaults, and one clear message per bad value."""
from __future__ import annotations

from pathlib import Path

import pytest

from vlmdpo.config import ConfigError, TrainConfig, load_config, parse_overrides

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BASE = ["model_name_or_path=tiny:causal_lm", "dataset=prefs.jsonl"]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def err(overrides, path=None) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides)
    text = str(e.value)
    assert "pydantic" not in text and "validation error" not in text.lower() and "Traceback" not in text
    return text


def test_yaml_plus_overrides(tmp_path):
    p = write(tmp_path, "model_name_or_path: tiny:qwen2_vl\ndataset: [a.jsonl, b.jsonl]\nbeta: 0.2\n")
    cfg = load_config(p, ["beta=0.3", "loss_type=[sigmoid, bco_pair, sft]", "loss_weights=[0.8,0.2,1.0]",
                          "output_dir=2024", "resume_from_checkpoint=true"])
    assert cfg.beta == 0.3 and cfg.datasets == ["a.jsonl", "b.jsonl"]
    assert cfg.loss_types == ["sigmoid", "bco_pair", "sft"] and cfg.loss_weights == [0.8, 0.2, 1.0]
    assert cfg.output_dir == "2024"  # a number on the command line is still a folder name
    assert cfg.resume_from_checkpoint == "auto"


def test_defaults_are_usable():
    cfg = load_config(None, BASE)
    assert (cfg.finetuning_type, cfg.lora_rank, cfg.lora_alpha, cfg.beta) == ("lora", 16, 32, 0.1)
    assert cfg.learning_rate == 5e-5 and cfg.per_device_eval_batch_size == cfg.per_device_train_batch_size
    assert cfg.loss_types == ["sigmoid"] and cfg.needs_reference and cfg.report_to == []
    assert load_config(None, BASE + ["finetuning_type=full"]).learning_rate == 5e-6
    assert load_config(None, BASE + ["learning_rate=1e-4"]).learning_rate == 1e-4
    assert not load_config(None, BASE + ["loss_type=simpo"]).needs_reference


def test_dict_overrides_and_python_construction():
    cfg = load_config(None, {"model_name_or_path": "m", "dataset": "d", "max_steps": 3})
    assert cfg.max_steps == 3
    assert TrainConfig(model_name_or_path="m", dataset="d").beta == 0.1


def test_unknown_key_suggests(tmp_path):
    p = write(tmp_path, "model_name_or_path: m\ndataset: d\nlerning_rate: 1e-5\n")
    assert err([], p) == f"unknown key 'lerning_rate' in {p}; did you mean 'learning_rate'?"
    assert "unknown key 'bta' in command-line override; did you mean 'beta'?" in err(BASE + ["bta=1"])
    assert "unknown key 'zzzz'" in err(BASE + ["zzzz=1"])


@pytest.mark.parametrize("override,expected", [
    ("beta=0", "beta: must be a positive number"),
    ("beta=-0.5", "beta: must be a positive number (got -0.5)"),
    ("loss_type=sigmod", "loss_type: unknown loss 'sigmod' (did you mean 'sigmoid'?); valid: sigmoid, ipo"),
    ("loss_type=[]", "loss_type: is empty"),
    ("loss_weights=[-1.0]", "loss_weights: must be finite and >= 0"),
    ("loss_weights=[1, 2]", "loss_weights: 2 weights for 1 loss types ['sigmoid']; give one weight per"),
    ("val_size=1.5", "val_size: must be a fraction in [0, 1) or a whole number"),
    ("val_size=-0.1", "val_size: must be a fraction"),
    ("dtype=fp8", "dtype: must be one of 'auto', 'float32', 'bfloat16' or 'float16'"),
    ("bf16=maybe", "bf16: input should be a valid boolean"),
    ("beta=abc", "beta: input should be a valid number"),
    ("lr_scheduler_type=cosin", "lr_scheduler_type: unknown scheduler 'cosin' (did you mean 'cosine'?)"),
    ("report_to=mlflow", "report_to: unknown tracker 'mlflow'"),
    ("ld_alpha=2", "ld_alpha: must be in [0, 1]"),
    ("per_device_train_batch_size=0", "per_device_train_batch_size: must be >= 1"),
    ("save_total_limit=0", "save_total_limit: must be >= 1 or left out"),
    ("warmup_ratio=1.5", "warmup_ratio: must be in [0, 1)"),
    ("learning_rate=-1", "learning_rate: must be a positive number"),
    ("resume_from_checkpoint=/no/such/dir", "resume_from_checkpoint: folder '/no/such/dir' does not exist"),
    ("early_stopping_patience=2", "early_stopping_patience: needs evaluation data"),
])
def test_bad_values_name_the_key(override, expected):
    assert expected in err(BASE + [override])


def test_cross_field_rules():
    assert "bf16 / fp16: both are true" in err(BASE + ["bf16=true", "fp16=true"])
    text = err(BASE + ["finetuning_type=full", "lora_rank=8", "lora_target=[q_proj]"])
    assert "lora_rank: is a LoRA option but finetuning_type is 'full'" in text and "lora_target:" in text
    assert "label_smoothing: the exo_pair loss needs it > 0" in err(BASE + ["loss_type=exo_pair"])
    assert "label_smoothing: the robust loss needs it in [0, 0.5)" in err(BASE + ["loss_type=robust",
                                                                                  "label_smoothing=0.6"])
    assert "val_size: set either val_size" in err(BASE + ["val_size=0.1", "eval_dataset=e.jsonl"])
    assert "image_min_pixels: 100 is larger" in err(BASE + ["image_min_pixels=100", "image_max_pixels=50"])
    assert load_config(None, BASE + ["val_size=10"]).val_size == 10
    assert load_config(None, BASE + ["val_size=0.1", "early_stopping_patience=2"]).early_stopping_patience == 2


def test_missing_required_keys_listed_together():
    text = err([])
    assert "model_name_or_path: missing" in text and "dataset: missing" in text


def test_bad_files(tmp_path):
    assert "not found" in err([], tmp_path / "nope.yaml")
    assert "not valid YAML at line 2" in err([], write(tmp_path, "beta: 0.1\n  bad: [\n"))
    assert "top level must be a mapping" in err([], write(tmp_path, "- a\n- b\n"))
    assert "is not key=value" in err(["beta"])
    assert parse_overrides(["image_root=/data/x", "ld_alpha=null", "loss_type=[a,b]"]) == {
        "image_root": "/data/x", "ld_alpha": None, "loss_type": ["a", "b"]}


def test_every_example_parses():
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert files, "examples/ has no YAML files"
    for f in files:
        cfg = load_config(f)  # raises ConfigError with the file name if an example rots
        assert cfg.model_name_or_path and cfg.dataset


def test_api_resolve_config_rederives_defaults(tmp_path):
    from vlmdpo.api import resolve_config

    cfg = resolve_config({"model_name_or_path": "m", "dataset": "d"})
    assert cfg.learning_rate == 5e-5
    full = resolve_config(cfg, finetuning_type="full")  # lr default follows the new fine-tuning type
    assert full.learning_rate == 5e-6 and full.dataset == "d"
    assert resolve_config(cfg) is cfg
    p = write(tmp_path, "model_name_or_path: m\ndataset: d\n")
    assert resolve_config(p, beta=0.3).beta == 0.3
    with pytest.raises(ConfigError, match="unknown key 'bta' in command-line override"):
        resolve_config(cfg, bta=1)


def test_vlmdpo_train_is_callable_even_as_a_package():
    import vlmdpo.train

    assert callable(vlmdpo.train) and vlmdpo.train.run_training.__name__ == "run_training"
    with pytest.raises(ConfigError, match="dataset: missing"):
        vlmdpo.train({"model_name_or_path": "m"})
