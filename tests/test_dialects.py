"""LLaMA-Factory and TRL DPOConfig YAMLs run as they are; their refused keys, precision and dataset names
are one-line errors that say what to do."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from vlmdpo.cli import main
from vlmdpo.config import ConfigError, load_config
from vlmdpo.config.dialects import aliases, translate
from vlmdpo.config.precision import mixed_precision
from vlmdpo.config.train_config import TrainConfig

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "vlmdpo" / "samples" / "trl"

LLAMAFACTORY_YAML = """\
### model
model_name_or_path: tiny:qwen2_vl
image_max_pixels: 262144
trust_remote_code: true

### method
stage: dpo
do_train: true
finetuning_type: lora
lora_rank: 4
lora_target: all
pref_beta: 0.1
pref_loss: sigmoid  # choices: [sigmoid (dpo), orpo, simpo]

### dataset
dataset: shapes_dpo
template: qwen2_vl
cutoff_len: 1024
max_samples: 3
overwrite_cache: true
preprocessing_num_workers: 1

### output
output_dir: saves/tiny/lora/dpo
logging_steps: 1
save_steps: 500
plot_loss: true
report_to: none

### train
per_device_train_batch_size: 2
gradient_accumulation_steps: 1
learning_rate: 5.0e-5
max_steps: 2
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: auto
ddp_timeout: 180000000
resume_from_checkpoint: null
"""

TRL_YAML = """\
model_name_or_path: tiny:causal_lm
dataset_name: prefs.jsonl
dataset_train_split: train
use_peft: true
lora_r: 4
lora_alpha: 8
lora_target_modules: all-linear
beta: 0.1
loss_type: sigmoid
max_length: 256
learning_rate: 5.0e-3
max_steps: 2
per_device_train_batch_size: 2
logging_steps: 1
output_dir: trl_out
bf16: false
gradient_checkpointing: false
remove_unused_columns: false
run_name: tiny-dpo
eval_strategy: steps
eval_steps: 1
dataset_num_proc: 2
push_to_hub: true
hub_model_id: me/tiny-dpo
"""


def _sharegpt_rows() -> list[dict]:
    rows = []
    for i, (img, yes, no) in enumerate([("red_square.png", "A red square.", "A blue circle."),
                                        ("blue_circle.png", "A blue circle.", "A red square.")] * 2):
        rows.append({"conversations": [{"from": "human", "value": f"<image>What shape is this? ({i})"}],
                     "chosen": {"from": "gpt", "value": yes}, "rejected": {"from": "gpt", "value": no},
                     "images": [f"images/{img}"]})
    return rows


@pytest.fixture
def lf_project(tmp_path, monkeypatch) -> Path:
    """A LLaMA-Factory project: data/dataset_info.json (a ranking entry and an SFT one), images, the YAML."""
    data = tmp_path / "data"
    shutil.copytree(SAMPLES / "images", data / "images")
    (data / "shapes_dpo.json").write_text(json.dumps(_sharegpt_rows()))
    (data / "sft.json").write_text(json.dumps([{"instruction": "hi", "output": "hello"}]))
    (data / "dataset_info.json").write_text(json.dumps({
        "shapes_dpo": {"file_name": "shapes_dpo.json", "formatting": "sharegpt", "ranking": True,
                       "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected",
                                   "images": "images"}},
        "alpaca_sft": {"file_name": "sft.json"},
    }))
    (tmp_path / "qwen2vl_lora_dpo.yaml").write_text(LLAMAFACTORY_YAML)
    monkeypatch.chdir(tmp_path)  # LLaMA-Factory's dataset_dir default "data" is relative to where it runs
    return tmp_path


def _error(capsys) -> str:
    """The error as printed: one `error:` message (a config's problems are listed under it), or a data
    source error under "cannot read the data:"; never a traceback."""
    err = capsys.readouterr().err
    heads = [line for line in err.splitlines() if line.startswith(("error:", "cannot read the data:"))]
    assert len(heads) == 1 and "Traceback" not in err, err
    return err[err.index(heads[0]):]


def test_llamafactory_dpo_yaml_trains_as_it_is(lf_project, capsys):
    assert main(["train", "qwen2vl_lora_dpo.yaml"]) == 0
    err = capsys.readouterr().err
    assert "read as vlmdpo keys: pref_beta -> beta, pref_loss -> loss_type, cutoff_len -> max_length" in err
    ignored = next(line for line in err.splitlines() if "do not apply to vlmdpo" in line)
    for key in ("do_train", "overwrite_cache", "plot_loss", "ddp_timeout"):
        assert key in ignored
    out = lf_project / "saves" / "tiny" / "lora" / "dpo"
    saved = yaml.safe_load((out / "vlmdpo_config.yaml").read_text())
    assert saved["beta"] == 0.1 and saved["lora_target"] == "all-linear" and saved["max_length"] == 1024
    assert saved["lora_alpha"] == 8  # LLaMA-Factory's default: 2 x lora_rank
    assert (out / "adapter_config.json").exists()
    assert json.loads((out / "train_results.json").read_text())["n_train_pairs"] == 3  # max_samples of 4 rows


def test_trl_dpoconfig_yaml_trains_as_it_is(tmp_path, monkeypatch, capsys):
    from hub_server import FakeHub

    monkeypatch.chdir(tmp_path)
    rows = [{"prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.", "rejected": "Maybe 7."} for i in range(6)]
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "dpo.yaml").write_text(TRL_YAML + "val_size: 2\n")
    hub = FakeHub()  # the hub, stood in for on localhost (HF_ENDPOINT)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    try:
        assert main(["train", "dpo.yaml"]) == 0
    finally:
        hub.close()
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(hub.files["me/tiny-dpo"])
    evals = [json.loads(line) for line in (tmp_path / "trl_out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if "eval_loss" in r] == [1, 2]  # eval_strategy: steps, eval_steps: 1
    err = capsys.readouterr().err
    assert "dataset_name -> dataset, use_peft -> finetuning_type, lora_r -> lora_rank, " \
           "lora_target_modules -> lora_target" in err
    saved = yaml.safe_load((tmp_path / "trl_out" / "vlmdpo_config.yaml").read_text())
    assert saved["finetuning_type"] == "lora" and saved["lora_rank"] == 4


@pytest.mark.parametrize("change,expected", [
    ({"stage": "sft"}, "stage: sft is not trained here; vlmdpo trains preference pairs (DPO family, stage: dpo); "
                       "use LLaMA-Factory for that stage"),
    ({"stage": "kto"}, "stage: kto is not trained here"),
    ({"do_train": False}, "do_train: false asks for no training"),
    ({"pref_loss": "kto_pair"}, "pref_loss: 'kto_pair' is not available here; use one of sigmoid, hinge, ipo"),
    ({"finetuning_type": "freeze"}, "finetuning_type: freeze is not available here; use finetuning_type: full"),
    ({"max_samples": 0}, "max_samples: must be >= 1 or left out (got 0)"),
    ({"template": "llava"}, "template: llava is for llava models, but tiny:qwen2_vl is qwen2_vl; "
                            "set template: qwen2_vl"),
    ({"template": "qwen"}, "template: 'qwen' is not a vision-language template vlmdpo knows"),
    ({"dataset": "alpaca_sft"}, "data/dataset_info.json entry 'alpaca_sft' is not preference data"),
    ({"dataset": "nope"}, "not a file or folder, and not a dataset registered in data/dataset_info.json "
                          "(registered: alpaca_sft, shapes_dpo)"),
    ({"bf16": True}, "bf16: true but no CUDA GPU is available"),
    ({"eval_steps": 1}, "eval_steps: 1 but there is no evaluation data; set eval_dataset or val_size, or remove"),
    ({"cutoff_len": 512, "max_length": 256}, "cutoff_len / max_length: both set max_length; keep one"),
])
def test_llamafactory_error_is_one_line(lf_project, capsys, change, expected):
    values = {**yaml.safe_load(LLAMAFACTORY_YAML), **change}
    (lf_project / "qwen2vl_lora_dpo.yaml").write_text(yaml.safe_dump(values))
    if change.get("bf16") is True:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            pytest.skip("this device has bf16")  # the CPU CI always runs it
    assert main(["train", "qwen2vl_lora_dpo.yaml"]) == 2
    assert expected in _error(capsys)


@pytest.mark.parametrize("key,hint", [
    ("batch_size", "use per_device_train_batch_size"),
    ("lerning_rate", "did you mean 'learning_rate'?"),
    ("lora_rnk", "did you mean 'lora_rank'?"),
    ("max_completion_lenght", "did you mean 'max_completion_length'?"),
])
def test_did_you_mean_is_right(key, hint):
    with pytest.raises(ConfigError) as e:
        load_config(None, {"model_name_or_path": "tiny:causal_lm", "dataset": "x.jsonl", key: 1})
    assert hint in str(e.value)
    for wrong in ("max_steps", "val_size", "completion_only_logits", "lora_modules"):
        assert f"did you mean '{wrong}'" not in str(e.value)


def test_aliases_are_not_unknown_and_target_modules_is_lora_target():
    cfg = load_config(None, {"model_name_or_path": "tiny:causal_lm", "dataset": "x.jsonl",
                             "target_modules": ["q_proj", "v_proj"]}, say=lambda _line: None)
    assert cfg.lora_target == ["q_proj", "v_proj"]


def test_every_alias_targets_a_key_of_ours_or_a_pending_one():
    pending = {"dataset_num_proc", "eval_strategy", "save_strategy", "load_best_model_at_end",
               "metric_for_best_model", "max_prompt_length", "max_completion_length", "push_to_hub",
               "hub_model_id", "overwrite_output_dir"}
    for key, alias in aliases().items():
        assert alias.ours in TrainConfig.model_fields or alias.ours in pending, key


def test_a_key_of_ours_passes_through_and_an_override_wins_over_the_file(tmp_path):
    (tmp_path / "c.yaml").write_text("model_name_or_path: tiny:causal_lm\ndataset: x.jsonl\npref_beta: 0.3\n")
    assert load_config(tmp_path / "c.yaml", ["beta=0.2"], say=lambda _line: None).beta == 0.2
    assert translate({"beta": 0.5}, TrainConfig.model_fields).values == {"beta": 0.5}


def test_lora_and_4bit_quantization_is_qlora():
    out = translate({"finetuning_type": "lora", "quantization_bit": 4}, TrainConfig.model_fields)
    assert out.values == {"finetuning_type": "qlora"}
    assert translate({"use_peft": True, "load_in_4bit": True}, TrainConfig.model_fields).values == \
        {"finetuning_type": "qlora"}


@pytest.mark.parametrize("bf16,fp16,cuda,cuda_bf16,expected", [
    ("auto", False, False, False, "no"),
    ("auto", False, True, True, "bf16"),
    ("auto", False, True, False, "no"),
    (True, False, True, True, "bf16"),
    (False, True, True, False, "fp16"),
    (False, False, False, False, "no"),
])
def test_mixed_precision_for_the_device(bf16, fp16, cuda, cuda_bf16, expected):
    assert mixed_precision(bf16, fp16, cuda=cuda, cuda_bf16=cuda_bf16) == expected


@pytest.mark.parametrize("bf16,fp16,cuda,expected", [
    (True, False, False, "bf16: true but no CUDA GPU is available (CPU training runs in float32); set bf16: auto"),
    (True, False, True, "bf16: true but this GPU has no bfloat16 support; set bf16: auto"),
    (False, True, False, "fp16: true but no CUDA GPU is available (float16 mixed precision needs one); "
                         "set fp16: false, or bf16: auto"),
])
def test_precision_the_device_lacks_is_an_error_with_the_fix(bf16, fp16, cuda, expected):
    with pytest.raises(ConfigError) as e:
        mixed_precision(bf16, fp16, cuda=cuda, cuda_bf16=False)
    assert str(e.value).startswith(expected)
