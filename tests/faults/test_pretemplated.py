"""Pre-templated "standard" rows (TRL's VLM blog): used as is in the model's own template, an
error in another family's, and plain text is templated exactly once."""
from __future__ import annotations

import json

import pytest
import torch

from vlmdpo.data.load import load_preferences
from vlmdpo.encode import EncodeError, encode_pair
from vlmdpo.model.families import adapter_for
from vlmdpo.model.tiny import build_tiny_config, build_tiny_processor, tiny_image

QWEN_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
# (prompt, chosen, rejected) as each family's template writes them, split the way TRL's blog does
PRETEMPLATED = {
    "idefics3": ("User:<image>What is it?<end_of_utterance>\n",
                 "Assistant: A cat.<end_of_utterance>\n", "Assistant: A dog.<end_of_utterance>\n"),
    "qwen2_vl": (f"{QWEN_SYSTEM}<|im_start|>user\n{QWEN_IMAGE}What is it?<|im_end|>\n",
                 "<|im_start|>assistant\nA cat.<|im_end|>\n", "<|im_start|>assistant\nA dog.<|im_end|>\n"),
}


def _write(tmp_path, rows):
    tiny_image().save(tmp_path / "cat.png")
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return load_preferences(str(path)).records


def _model(family):
    return build_tiny_processor(family), adapter_for(build_tiny_config(family))


def _plain_row(answer_c="A cat.", answer_r="A dog."):
    def turn(role, *parts):
        return [{"role": role, "content": list(parts)}]

    return {"prompt": turn("user", {"type": "image"}, {"type": "text", "text": "What is it?"}),
            "chosen": turn("assistant", {"type": "text", "text": answer_c}),
            "rejected": turn("assistant", {"type": "text", "text": answer_r}), "images": ["cat.png"]}


@pytest.mark.parametrize("family", sorted(PRETEMPLATED))
def test_own_template_is_used_as_is(tmp_path, family):
    prompt, chosen, rejected = PRETEMPLATED[family]
    templated, plain = _write(tmp_path, [{"prompt": prompt, "chosen": chosen, "rejected": rejected,
                                          "images": ["cat.png"]}, _plain_row()])
    proc, ad = _model(family)
    a = encode_pair(templated, proc, ad, max_length=None)
    b = encode_pair(plain, proc, ad, max_length=None)
    assert a.prompt_ids == b.prompt_ids
    assert a.chosen_ids == b.chosen_ids and a.rejected_ids == b.rejected_ids
    assert a.vision.keys() == b.vision.keys() and all(torch.equal(a.vision[k], b.vision[k]) for k in a.vision)
    tok = proc.tokenizer
    # completion-only: the assistant header belongs to the prompt, the answer to the completion
    assert tok.decode(a.chosen_ids, skip_special_tokens=True).strip() == "A cat."
    text = tok.decode(a.prompt_ids)
    assert text.count("What is it?") == 1 and "User: User:" not in text


def test_trl_blog_row_with_header_in_the_answers_gets_no_doubled_turn(tmp_path):
    prompt, chosen, rejected = PRETEMPLATED["idefics3"]
    (rec,) = _write(tmp_path, [{"prompt": prompt, "chosen": chosen, "rejected": rejected, "images": ["cat.png"]}])
    proc, ad = _model("idefics3")
    pair = encode_pair(rec, proc, ad, max_length=None)
    full = proc.tokenizer.decode(pair.prompt_ids + pair.chosen_ids)
    assert full.count("<end_of_utterance>") == 2  # one per turn, not doubled
    assert full.count("Assistant:") == 1 and "User:User:" not in full.replace(" ", "")


@pytest.mark.parametrize("family,text,marker", [
    ("idefics3", "<|im_start|>user\n<image>What is it?<|im_end|>\n", "<|im_start|>user"),
    ("qwen2_vl", "<start_of_turn>user\n<image>What is it?<end_of_turn>\n", "<start_of_turn>"),
])
def test_another_familys_template_is_an_error_naming_row_and_field(tmp_path, family, text, marker):
    (rec,) = _write(tmp_path, [{"prompt": text, "chosen": "A cat.", "rejected": "A dog.", "images": ["cat.png"]}])
    proc, ad = _model(family)
    with pytest.raises(EncodeError) as e:
        encode_pair(rec, proc, ad, max_length=None)
    msg = str(e.value)
    assert e.value.kind == "template_mismatch"
    assert "prefs.jsonl:1" in msg and "'prompt'" in msg and marker in msg and "plain text" in msg


def test_plain_text_is_templated_once(tmp_path):
    (rec,) = _write(tmp_path, [_plain_row()])
    proc, ad = _model("idefics3")
    pair = encode_pair(rec, proc, ad, max_length=None)
    text = proc.tokenizer.decode(pair.prompt_ids + pair.chosen_ids)
    assert text.count("User:") == 1 and text.count("<end_of_utterance>") == 2


def test_text_only_model_finds_its_template_from_the_template_itself(tmp_path):
    # causal_lm declares no markers (checkpoints differ); its ChatML template's own markers are found
    system = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    rows = [{"prompt": f"{system}<|im_start|>user\nHi?<|im_end|>\n", "chosen": "<|im_start|>assistant\nYes.<|im_end|>\n",
             "rejected": "<|im_start|>assistant\nNo.<|im_end|>\n"},
            {"prompt": [{"role": "user", "content": "Hi?"}], "chosen": [{"role": "assistant", "content": "Yes."}],
             "rejected": [{"role": "assistant", "content": "No."}]}]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    templated, plain = load_preferences(str(path)).records
    proc, ad = _model("causal_lm")
    a, b = (encode_pair(r, proc, ad, max_length=None) for r in (templated, plain))
    assert (a.prompt_ids, a.chosen_ids, a.rejected_ids) == (b.prompt_ids, b.chosen_ids, b.rejected_ids)
