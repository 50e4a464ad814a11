"""Stop tokens: one function, read from the family adapter. The ids `vlmdpo eval` stops at for the tiny
families (and, in test_infer_nano.py, builtin:nano-smolvlm) are pinned to what eval's own end-of-turn list gave before they moved
(the quickstart's grounded-answer numbers depend on them)."""
from __future__ import annotations

import pytest

from vlmdpo.inference import load_for_inference, stop_token_ids

# family -> stop tokens, in order (computed with eval's former stop_ids before it moved here)
PINNED = {
    "idefics3": ["<end_of_utterance>", "<|im_end|>"],
    "qwen2_vl": ["<|im_end|>"],
    "qwen2_5_vl": ["<|im_end|>"],
    "qwen3_vl": ["<|im_end|>"],
    "llava": ["</s>"],
    "llava_next": ["</s>"],
    "gemma3": ["<eos>", "<end_of_turn>"],
    "causal_lm": ["<|im_end|>"],
}
PINNED_IDS = {"idefics3": [293, 292], "gemma3": [292, 295]}  # the rest: [293]


@pytest.mark.parametrize("family", sorted(PINNED))
def test_tiny_families_stop_where_eval_always_stopped(family):
    im = load_for_inference(f"tiny:{family}", device="cpu")
    ids = stop_token_ids(im.model, im.tokenizer)
    assert ids == PINNED_IDS.get(family, [293])
    assert im.tokenizer.convert_ids_to_tokens(ids) == PINNED[family]


def test_a_peft_wrapped_model_stops_at_the_same_ids(idefics3_adapter):
    im = load_for_inference(idefics3_adapter, device="cpu")  # eval's tuned model is an adapter like this
    assert stop_token_ids(im.model, im.tokenizer) == [293, 292]


def test_a_model_vlmdpo_cannot_train_still_stops_at_eos():
    from types import SimpleNamespace

    model = SimpleNamespace(config=SimpleNamespace(model_type="some_new_vlm", vision_config={}),
                            generation_config=SimpleNamespace(eos_token_id=[7, 8]))
    tokenizer = SimpleNamespace(eos_token_id=8, unk_token_id=None, convert_tokens_to_ids=lambda _t: 5)
    assert stop_token_ids(model, tokenizer) == [7, 8]
