"""push_to_hub and `export --push-to-hub`, offline: huggingface_hub talks to a local stand-in (HF_ENDPOINT)."""
from __future__ import annotations

from pathlib import Path

import pytest

import vlmdpo
from hub_server import FakeHub

SAMPLES = Path(vlmdpo.__file__).parent / "samples" / "trl"


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from vlmdpo.api import train

    out = tmp_path_factory.mktemp("push") / "out"
    train({"model_name_or_path": "tiny:idefics3", "dataset": str(SAMPLES / "prefs.jsonl"), "output_dir": str(out),
           "lora_rank": 4, "lora_alpha": 8, "max_length": 512, "max_steps": 2, "per_device_train_batch_size": 2,
           "val_size": 2, "eval_steps": 1, "logging_steps": 1, "save_steps": 1, "progress_bar": False, "beta": 0.3})
    return out


def test_push_folder_creates_the_repo_and_uploads_every_file(hub, tmp_path: Path):
    from vlmdpo.hub import push_folder

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("---\nlibrary_name: transformers\n---\n# m\n")
    (tmp_path / "checkpoint-1").mkdir()
    (tmp_path / "checkpoint-1" / "model.safetensors").write_text("x")
    url = push_folder(tmp_path, "me/model")
    assert url.endswith("/me/model") and hub.repos == {"me/model"}
    assert set(hub.files["me/model"]) == {"config.json", "README.md"}  # checkpoints stay local
    assert all(t == "Bearer hf_test_token" for t in hub.tokens)
    assert ("POST", "/api/repos/create") in hub.calls


def test_training_with_push_to_hub_uploads_the_adapter_and_a_filled_card(hub, trained: Path):
    from vlmdpo.api import train

    train(str(trained / "vlmdpo_config.yaml"), overwrite_output_dir=True, push_to_hub=True, hub_model_id="me/run")
    files = hub.files["me/run"]
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "training_curves.png",
            "vlmdpo_config.yaml", "train_results.json"} <= set(files)
    assert not any(name.startswith("checkpoint-") for name in files)
    card = files["README.md"].decode()
    assert "library_name: peft" in card and "PeftModel.from_pretrained" in card and "tiny:idefics3" in card
    assert "beta: 0.3" in card and "| n_train_pairs |" in card and "eval_loss" in card
    assert "![training curves](training_curves.png)" in card


def test_export_push_to_hub_uploads_the_merged_model(hub, trained: Path, tmp_path: Path, capsys):
    from vlmdpo.cli import main

    assert main(["export", "--model", str(trained / "checkpoint-2"), "-o", str(tmp_path / "m"),
                 "--push_to_hub", "me/merged"]) == 0
    files = hub.files["me/merged"]
    assert {"config.json", "model.safetensors", "README.md", "training_curves.png"} <= set(files)
    assert "LoRA adapter" in files["README.md"].decode() and "uploaded to" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["no token", "offline", "unreachable"])
def test_push_failures_are_one_clear_error_and_keep_the_folder(monkeypatch, tmp_path: Path, capsys, case):
    from vlmdpo.cli import main

    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", case == "offline")
    if case == "no token":
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    else:
        monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setattr("vlmdpo.export.export_model", lambda *a, **k: _Result(tmp_path))
    assert main(["export", "--model", "x", "-o", str(tmp_path), "--push-to-hub", "me/m"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the model stays in {tmp_path}" in err
    assert {"no token": "no hub token", "offline": "HF_HUB_OFFLINE", "unreachable": "failed"}[case] in err
    assert (tmp_path / "config.json").is_file()


def test_push_to_hub_needs_hub_model_id():
    from vlmdpo.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="push_to_hub: needs hub_model_id"):
        load_config(None, {"model_name_or_path": "tiny:idefics3", "dataset": "x.jsonl", "push_to_hub": True})


class _Result:
    def __init__(self, path: Path):
        self.path, self.merged, self.dtype, self.moved_aside = path, True, "float32", None
