"""collate: the plain [chosen; rejected] layout, padding, masks, vision stacking, token types."""
from __future__ import annotations

import pytest
import torch

from vlmdpo.batching.plain import collate
from vlmdpo.encode import encode_pair
from vlmdpo.model.families import adapter_for
from vlmdpo.model.tiny import build_tiny_config, build_tiny_processor, tiny_record
from vlmdpo.types import EncodedPair


def test_layout_padding_and_masks_by_hand():
    pairs = [EncodedPair("a", [1, 2, 3], [4, 5], [6]), EncodedPair("b", [7, 8], [9], [10, 11])]
    b = collate(pairs, pad_token_id=0, family="causal_lm")
    assert b.model_inputs["input_ids"].tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 0, 0], [1, 2, 3, 6, 0], [7, 8, 10, 11, 0]]
    assert b.model_inputs["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]
    assert b.completion_mask.tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 1, 1, 0]]
    assert b.ids == ["a", "b"] and b.num_pairs == 2 and set(b.model_inputs) == {"input_ids", "attention_mask"}


def test_pad_to_multiple_of():
    b = collate([EncodedPair("a", [1, 2, 3], [4, 5], [6])], pad_token_id=9, family="causal_lm", pad_to_multiple_of=4)
    assert b.model_inputs["input_ids"].tolist() == [[1, 2, 3, 4, 5, 9, 9, 9], [1, 2, 3, 6, 9, 9, 9, 9]]


def test_image_contrast_rows_use_the_rejected_prompt_and_images():
    v = lambda x: {"pixel_values": torch.full((1, 3, 2, 2), float(x))}  # noqa: E731
    pairs = [EncodedPair("a", [1, 2], [3], [4], vision=v(1), rejected_prompt_ids=[5, 6, 7], rejected_vision=v(2)),
             EncodedPair("b", [8], [9], [10], vision=v(3))]
    b = collate(pairs, pad_token_id=0, family="llava")
    assert b.model_inputs["input_ids"].tolist() == [[1, 2, 3, 0], [8, 9, 0, 0], [5, 6, 7, 4], [8, 10, 0, 0]]
    assert b.completion_mask.tolist() == [[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]]
    # one image per row, in row order: chosen a, chosen b, rejected a (its own image), rejected b
    assert b.model_inputs["pixel_values"][:, 0, 0, 0].tolist() == [1.0, 3.0, 2.0, 3.0]


def test_per_sample_tiles_are_zero_padded_across_rows():
    v = lambda n: {"pixel_values": torch.ones(1, n, 3, 2, 2), "pixel_attention_mask": torch.ones(1, n, 2, 2)}  # noqa: E731
    pairs = [EncodedPair("a", [1], [2], [3], vision=v(2)), EncodedPair("b", [1], [2], [4], vision=v(5)),
             EncodedPair("c", [1], [2], [5])]  # text-only pair: contributes no image rows
    b = collate(pairs, pad_token_id=0, family="idefics3")
    pv, pm = b.model_inputs["pixel_values"], b.model_inputs["pixel_attention_mask"]
    assert pv.shape == (4, 5, 3, 2, 2) and pm.shape == (4, 5, 2, 2)
    assert pv[0, 2:].abs().sum() == 0 and pv[0, :2].min() == 1 and pm[1].min() == 1 and pm[2, 2:].sum() == 0


@pytest.mark.parametrize("family, key", [("qwen2_vl", "mm_token_type_ids"), ("qwen3_vl", "mm_token_type_ids"),
                                          ("gemma3", "token_type_ids")])
def test_token_types_equal_what_the_processor_returns(family, key):
    proc = build_tiny_processor(family)
    ad = adapter_for(build_tiny_config(family))
    rec = tiny_record(2)
    pair = encode_pair(rec, proc, ad, max_length=None)
    text = proc.apply_chat_template(rec.prompt, tokenize=False, add_generation_prompt=True)
    images = [r.pil for r in rec.images]
    ref = proc(text=[text], images=[images], return_tensors="pt", add_special_tokens=False)[key][0]
    b = collate([pair, encode_pair(tiny_record(0), proc, ad, max_length=None)],
                pad_token_id=proc.tokenizer.pad_token_id, family=ad)
    types = b.model_inputs[key]
    n = len(pair.prompt_ids)
    assert types[0, :n].equal(ref) and types[2, :n].equal(ref)  # chosen and rejected rows of the image pair
    assert types[0, n:].sum() == 0 and types[1].sum() == 0 and types[3].sum() == 0  # answers, text-only pair
    assert ref.sum() > 0


def test_stacked_qwen_patches_follow_row_order():
    proc = build_tiny_processor("qwen2_vl")
    ad = adapter_for(build_tiny_config("qwen2_vl"))
    p1 = encode_pair(tiny_record(1, seed=1), proc, ad, max_length=None)
    p2 = encode_pair(tiny_record(2, seed=5), proc, ad, max_length=None)
    b = collate([p1, p2], pad_token_id=0, family=ad)
    pv = b.model_inputs["pixel_values"]
    expected = torch.cat([p1.vision["pixel_values"], p2.vision["pixel_values"]] * 2)
    assert pv.equal(expected)
    assert b.model_inputs["image_grid_thw"].shape[0] == 6  # 1 + 2 images, twice


def test_empty_batch_and_unbound_adapter_are_errors():
    with pytest.raises(ValueError, match="at least one pair"):
        collate([], pad_token_id=0, family="causal_lm")
    with pytest.raises(ValueError, match="image token id"):
        collate([EncodedPair("a", [1], [2], [3])], pad_token_id=0, family="qwen2_vl")
