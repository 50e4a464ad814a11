"""The Train page's routes: a form of every config key, the CLI's validation shown at each field, the YAML
that `vlmdpo train` reads, and a run that fails to start marked failed with its log tail."""
from __future__ import annotations

import yaml
import pytest
from studio_helpers import fake_run, text_prefs, tiny_form, wait_status

from vlmdpo.config import load_config
from vlmdpo.config.train_config import TrainConfig


def test_the_form_has_every_config_key_once_with_its_description(client):
    data = client.get("/api/train/fields").json()
    keys = [f["key"] for f in data["fields"]]
    assert sorted(keys) == sorted(TrainConfig.model_fields) and len(keys) == len(set(keys))
    assert data["sections"] == ["Basics", "LoRA", "Preference loss", "Images and lengths", "Advanced"]
    by_key = {f["key"]: f for f in data["fields"]}
    assert by_key["lora_rank"]["section"] == "LoRA" and by_key["lora_rank"]["default"] == "16"
    assert by_key["beta"]["section"] == "Preference loss"
    assert by_key["image_max_pixels"]["section"] == "Images and lengths"
    assert by_key["learning_rate"]["section"] == "Basics"
    assert by_key["finetuning_type"]["choices"] == ["lora", "qlora", "full"]
    assert by_key["freeze_vision_tower"]["choices"] == ["true", "false"]
    assert all(f["description"] for f in data["fields"])
    page = client.get("/train").text
    assert 'name="lora_rank"' in page or "name='lora_rank'" in page


@pytest.mark.parametrize("values, field, words", [
    ({"beta": "abc"}, "beta", "valid number"),
    ({"lora_rank": "0"}, "lora_rank", ">= 1"),
    ({"loss_type": "sigmod"}, "loss_type", "did you mean 'sigmoid'"),
    ({"bogus_key": "1"}, "bogus_key", "unknown key"),
    ({"dataset": "/etc/passwd"}, "dataset", "outside the folders"),
    ({"dataset": "nowhere.jsonl"}, "dataset", "no such file"),
    ({"model_name_or_path": "/etc"}, "model_name_or_path", "outside the folders"),
    ({"resume_from_checkpoint": "../../x"}, "resume_from_checkpoint", "outside the folders"),
    ({"output_dir": "/tmp/../etc/out"}, "output_dir", "outside the folders"),
    ({"image_path_map": "{a: [}"}, "image_path_map", ""),
])
def test_invalid_values_are_shown_at_their_field(client, tmp_path, values, field, words):
    form = tiny_form(text_prefs(tmp_path / "p.jsonl"), "bad")
    form["values"].update(values)
    r = client.post("/api/train/validate", json=form)
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert any(e["field"] == field and words in e["message"] for e in errors), errors
    assert r.json()["error"]["field"] == errors[0]["field"]


def test_a_run_needs_a_name(client, tmp_path):
    form = tiny_form(text_prefs(tmp_path / "p.jsonl"), "  ")
    assert client.post("/api/train/validate", json=form).json()["errors"][0]["field"] == "run_name"


def test_the_yaml_is_what_vlmdpo_train_reads(client, studio_home, tmp_path):
    data = text_prefs(tmp_path / "p.jsonl")
    r = client.post("/api/train/validate", json=tiny_form(data, "my run", beta="0.2", loss_type="[sigmoid, sft]"))
    assert r.status_code == 200, r.text
    path = tmp_path / "config.yaml"
    path.write_text(r.json()["yaml"])
    cfg = load_config(path)
    assert cfg.beta == 0.2 and cfg.loss_type == ["sigmoid", "sft"] and cfg.dataset == str(data)
    assert cfg.output_dir == str(studio_home.root / "runs" / "my-run" / "output") and cfg.progress_bar is False
    assert list(yaml.safe_load(r.json()["yaml"]))[:2] == ["model_name_or_path", "dataset"]


def test_a_run_that_fails_to_start_is_marked_failed_with_its_log(client, studio_home, tmp_path):
    data = tmp_path / "broken.jsonl"
    data.write_text('{"prompt": "hi", "chosen": "", "rejected": "no"}\n')
    r = client.post("/api/train/start", json=tiny_form(data, "broken"))
    assert r.status_code == 200, r.text
    run = wait_status(studio_home, r.json()["run"]["id"], ("failed", "finished"), timeout=180)
    assert run["status"] == "failed" and "exit code 1" in run["message"]
    assert f"{data}:1" in run["message"]  # the trainer's own error, file:row, in the log tail
    detail = client.get(f"/api/train/runs/{run['id']}").json()
    assert f"{data}:1" in detail["log"]
    taken = client.post("/api/train/start", json=tiny_form(data, "broken"))
    assert taken.status_code == 409 and taken.json()["error"]["field"] == "run_name"


def test_stop_resume_refusals(client, studio_home):
    run = fake_run(studio_home, "done", [])
    stop = client.post(f"/api/train/runs/{run['id']}/stop")
    assert stop.status_code == 409 and "not running" in stop.json()["error"]["message"]
    resume = client.post(f"/api/train/runs/{run['id']}/resume")
    assert resume.status_code == 409 and "no checkpoint" in resume.json()["error"]["message"]
    assert client.get("/api/train/runs/999").status_code == 404
