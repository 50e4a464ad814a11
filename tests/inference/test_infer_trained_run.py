"""chat / export / compare on the folder a real (tiny, one-step) training run writes."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from run_helpers import SAMPLES, one_step_run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    return one_step_run(tmp_path_factory.mktemp("run") / "out", save_steps=100)


def test_export_of_a_trained_run_matches_the_adapter(trained_run: Path, tmp_path: Path):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmdpo.export import export_model
    from vlmdpo.inference import load_for_inference, user_message

    res = export_model(str(trained_run), tmp_path / "merged")
    assert res.merged and res.base_name == "tiny:idefics3"  # found through vlmdpo_config.yaml
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "beta: 0.3" in card and "## Final training metrics" in card and "n_train_pairs" in card

    plain = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "merged")
    adapter = load_for_inference(trained_run, device="cpu")
    image = Image.open(SAMPLES / "images" / "red_square.png").convert("RGB")
    text = processor.apply_chat_template([user_message("What shape is in the picture?", 1)], add_generation_prompt=True)
    inputs = dict(processor(text=[text], images=[[image]], return_tensors="pt"))
    with torch.no_grad():
        a = adapter.model.generate(**inputs, max_new_tokens=8, do_sample=False)
        b = plain.generate(**inputs, max_new_tokens=8, do_sample=False)
        with adapter.model.disable_adapter():
            base_logits = adapter.model(**inputs).logits
        tuned_logits = adapter.model(**inputs).logits
    assert (tuned_logits - base_logits).abs().max() > 1e-4  # one step at lr 1e-2 moved the model
    assert a.tolist() == b.tolist()


def test_chat_and_compare_on_a_trained_run(trained_run: Path, tmp_path: Path):
    from vlmdpo.chat import run_chat
    from vlmdpo.compare import run_compare
    from vlmdpo.inference import GenerationSettings

    settings = GenerationSettings(max_new_tokens=4)
    reply = run_chat(str(trained_run), images=[str(SAMPLES / "images" / "red_square.png")], prompt="What shape?",
                     settings=settings, device="cpu", stdout=io.StringIO())
    assert isinstance(reply, str)
    result = run_compare("tiny:idefics3", str(trained_run), data=str(SAMPLES / "prefs.jsonl"), limit=2,
                         out=tmp_path / "c.html", settings=settings, device="cpu", stdout=io.StringIO())
    assert result.beta == 0.3 and len(result.rows) == 2
    assert all(r.reward("chosen", result.beta) is not None for r in result.rows)
