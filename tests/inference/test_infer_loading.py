"""load_for_inference: every kind of --model value, and clear errors for wrong folders."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from inference_helpers import make_adapter
from vlmdpo.inference import ModelDirError, load_for_inference, read_train_config


def test_tiny_name_is_built_by_the_model_layer():
    im = load_for_inference("tiny:causal_lm", device="cpu")
    assert im.kind == "named" and not im.is_vlm
    assert not im.model.training
    assert next(im.model.parameters()).dtype == torch.float32


def test_unknown_tiny_family_names_the_choices():
    with pytest.raises(ModelDirError, match="tiny:idefics3"):
        load_for_inference("tiny:nope", device="cpu")


def test_adapter_dir_loads_its_recorded_base(idefics3_adapter: Path):
    im = load_for_inference(idefics3_adapter, device="cpu")
    assert im.kind == "adapter" and im.base_name == "tiny:idefics3" and im.is_vlm
    from peft import PeftModel

    assert isinstance(im.model, PeftModel)
    assert type(im.base_model).__name__ == "Idefics3ForConditionalGeneration"


def test_adapter_base_comes_from_training_config_when_not_recorded(tmp_path: Path):
    folder = make_adapter(tmp_path / "run", "causal_lm", record_base=False)
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] is None
    with pytest.raises(ModelDirError, match="--base"):
        load_for_inference(folder, device="cpu")
    (folder / "vlmdpo_config.yaml").write_text("model_name_or_path: tiny:causal_lm\nbeta: 0.2\n")
    im = load_for_inference(folder, device="cpu")
    assert im.base_name == "tiny:causal_lm" and im.train_config["beta"] == 0.2


def test_explicit_base_overrides(tmp_path: Path):
    folder = make_adapter(tmp_path / "run", "causal_lm", record_base=False)
    im = load_for_inference(folder, base="tiny:causal_lm", device="cpu")
    assert im.kind == "adapter" and im.base_name == "tiny:causal_lm"


def test_checkpoint_subfolder_reads_the_run_config_from_its_parent(tmp_path: Path):
    (tmp_path / "vlmdpo_config.yaml").write_text("model_name_or_path: tiny:causal_lm\n")
    ckpt = tmp_path / "checkpoint-5"
    ckpt.mkdir()
    assert read_train_config(ckpt) == {"model_name_or_path": "tiny:causal_lm"}


def test_full_model_folder(tmp_path: Path):
    from vlmdpo.model.tiny import build_tiny

    model, processor = build_tiny("qwen2_vl")
    model.save_pretrained(tmp_path / "full")
    processor.save_pretrained(tmp_path / "full")
    im = load_for_inference(tmp_path / "full", device="cpu")
    assert im.kind == "full" and im.is_vlm
    ref = dict(model.named_parameters())
    for name, p in im.model.named_parameters():
        assert torch.equal(p, ref[name]), name


def test_missing_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ModelDirError, match="no such model folder"):
        load_for_inference(str(tmp_path / "nope"), device="cpu")


def test_folder_without_model_files_lists_model_subfolders(tmp_path: Path):
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "adapter_config.json").write_text("{}")
    (tmp_path / "logs").mkdir()
    with pytest.raises(ModelDirError) as err:
        load_for_inference(tmp_path, device="cpu")
    assert "not a model folder" in str(err.value) and "checkpoint-10" in str(err.value)
    assert "logs" not in str(err.value)


def test_a_file_is_not_a_model_folder(tmp_path: Path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(ModelDirError, match="is a file"):
        load_for_inference(f, device="cpu")


def test_adapter_with_broken_config(tmp_path: Path):
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="adapter_config.json: invalid JSON"):
        load_for_inference(tmp_path, device="cpu")


def test_adapter_whose_base_folder_is_missing(tmp_path: Path):
    folder = make_adapter(tmp_path / "run", "causal_lm", record_base=False)
    with pytest.raises(ModelDirError, match="no such model folder"):
        load_for_inference(folder, base=str(tmp_path / "gone"), device="cpu")


def test_adapter_on_the_wrong_base_is_a_clear_error(tmp_path: Path):
    folder = make_adapter(tmp_path / "run", "causal_lm")
    with pytest.raises(ModelDirError, match="does not fit its base tiny:qwen2_vl"):
        load_for_inference(folder, base="tiny:qwen2_vl", device="cpu")


def test_broken_model_folder_names_the_folder(tmp_path: Path):
    (tmp_path / "config.json").write_text('{"model_type": "no_such_architecture"}')
    with pytest.raises(ModelDirError) as err:
        load_for_inference(tmp_path, device="cpu")
    assert str(tmp_path) in str(err.value) and "cannot load the model" in str(err.value)
