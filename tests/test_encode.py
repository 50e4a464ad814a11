"""encode_pair on every tiny family: chat templates, labels, images, truncation, errors."""
from __future__ import annotations

import logging

import pytest

from vlmdpo.encode import EncodeError, encode_pair
from vlmdpo.model.families import adapter_for
from vlmdpo.model.tiny import FAMILIES, build_tiny_config, build_tiny_processor, tiny_image, tiny_record
from vlmdpo.model.tiny_tokenizer import build_tokenizer
from vlmdpo.types import ImageRef, RowSource

VLM_FAMILIES = [f for f in FAMILIES if f != "causal_lm"]
CHOSEN, REJECTED = "The cat is on the red mat.", "A dog."


def setup(family):
    proc = build_tiny_processor(family)
    return proc, getattr(proc, "tokenizer", proc), adapter_for(build_tiny_config(family))


def answer(tok, ids) -> str:
    return tok.decode(ids, skip_special_tokens=True).strip()


def n_image_tokens(pair, ad) -> int:
    return pair.prompt_ids.count(ad.image_token)


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_are_exactly_the_answers(family):
    proc, tok, ad = setup(family)
    rec = tiny_record(0 if family == "causal_lm" else 1, system="Be brief.")
    pair = encode_pair(rec, proc, ad, max_length=None)
    assert answer(tok, pair.chosen_ids) == CHOSEN
    assert answer(tok, pair.rejected_ids) == REJECTED
    # the end of the assistant turn is a label too: the model must learn to stop
    specials = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    tail = [i for i in pair.chosen_ids if tok.decode([i]).strip()][-1]
    assert tail in specials
    prompt = tok.decode(pair.prompt_ids)
    assert "What is the cat doing?" in prompt and "Be brief." in prompt and CHOSEN not in prompt
    if family != "causal_lm":
        assert n_image_tokens(pair, ad) > 0 and pair.vision["pixel_values"].numel() > 0
    assert pair.rejected_prompt_ids is None and not pair.truncated


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_plus_completion_is_the_rendered_conversation(family):
    # text-only, so the tokenized full conversation can be compared token by token
    proc, tok, ad = setup(family)
    rec = tiny_record(0, history=True)
    pair = encode_pair(rec, proc, ad, max_length=None)
    msgs = rec.prompt + rec.chosen
    if family == "causal_lm":
        msgs = [{"role": m["role"], "content": m["content"][0]["text"]} for m in msgs]
    full = tok(proc.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"]
    expected_eos = [tok.eos_token_id] if family == "llava" else []  # its template has no end of turn
    assert pair.prompt_ids + pair.chosen_ids == full + expected_eos
    assert "Hi! Show me a picture." in tok.decode(pair.prompt_ids)
    assert pair.vision == {}


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_two_images_give_twice_the_image_tokens(family):
    proc, tok, ad = setup(family)
    one = encode_pair(tiny_record(1), proc, ad, max_length=None)
    two = encode_pair(tiny_record(2), proc, ad, max_length=None)
    assert n_image_tokens(two, ad) == 2 * n_image_tokens(one, ad)
    assert answer(tok, two.chosen_ids) == CHOSEN
    per_image = {"llava": 16, "gemma3": 4, "qwen2_vl": 4, "qwen2_5_vl": 4, "qwen3_vl": 4}
    if family in per_image:
        assert n_image_tokens(one, ad) == per_image[family]
    if "image_grid_thw" in two.vision:
        assert two.vision["image_grid_thw"].shape[0] == 2


def test_llava_gets_eos_its_template_lacks():
    proc, tok, ad = setup("llava")
    pair = encode_pair(tiny_record(1), proc, ad, max_length=None)
    assert pair.chosen_ids[-1] == tok.eos_token_id and pair.rejected_ids[-1] == tok.eos_token_id
    assert pair.chosen_ids.count(tok.eos_token_id) == 1


def test_image_max_pixels_shrinks_image_tokens():
    proc, tok, ad = setup("qwen2_vl")
    rec = tiny_record(1)
    rec.images = [ImageRef(pil=tiny_image(3, size=(224, 224)))]
    big = encode_pair(rec, proc, ad, max_length=None)
    small = encode_pair(rec, proc, ad, max_length=None, image_max_pixels=56 * 56)
    assert n_image_tokens(big, ad) == 16  # processor's own max_pixels: 112x112 -> 4x4 tokens
    assert n_image_tokens(small, ad) == 4


def test_image_contrast_pair_encodes_a_second_prompt():
    proc, tok, ad = setup("qwen2_vl")
    rec = tiny_record(1, chosen="A cat.", rejected="A cat.")  # same text is fine: the images differ
    rec.rejected_images = [ImageRef(pil=tiny_image(99))]
    pair = encode_pair(rec, proc, ad, max_length=None)
    assert pair.rejected_prompt_ids == pair.prompt_ids  # same size image -> same tokens
    assert not pair.vision["pixel_values"].equal(pair.rejected_vision["pixel_values"])


# ------------------------------------------------------------------------------ truncation
def lengths(family="qwen2_vl", **kw):
    proc, tok, ad = setup(family)
    rec = tiny_record(1, **kw)
    return proc, tok, ad, rec, encode_pair(rec, proc, ad, max_length=None)


def test_truncation_cuts_completions_never_the_prompt():
    proc, tok, ad, rec, full = lengths()
    p = len(full.prompt_ids)
    cut = encode_pair(rec, proc, ad, max_length=p + 3)
    assert cut.prompt_ids == full.prompt_ids and n_image_tokens(cut, ad) == n_image_tokens(full, ad)
    assert cut.chosen_ids == full.chosen_ids[:3] and cut.rejected_ids == full.rejected_ids[:3]
    assert cut.truncated
    exact = encode_pair(rec, proc, ad, max_length=p + max(len(full.chosen_ids), len(full.rejected_ids)))
    assert exact.chosen_ids == full.chosen_ids and not exact.truncated


def test_prompt_that_does_not_fit_is_an_error():
    proc, tok, ad, rec, full = lengths()
    rec.source = RowSource("prefs.jsonl", 7)
    with pytest.raises(EncodeError) as e:
        encode_pair(rec, proc, ad, max_length=len(full.prompt_ids))
    assert e.value.kind == "prompt_too_long"
    assert "prefs.jsonl:7" in str(e.value) and "max_length" in str(e.value)


def test_drop_mode_rejects_any_pair_that_does_not_fit():
    proc, tok, ad, rec, full = lengths()
    with pytest.raises(EncodeError) as e:
        encode_pair(rec, proc, ad, max_length=len(full.prompt_ids) + 3, truncation="drop")
    assert e.value.kind == "too_long"
    need = len(full.prompt_ids) + len(full.chosen_ids)
    assert encode_pair(rec, proc, ad, max_length=need, truncation="drop").chosen_ids == full.chosen_ids


def test_truncation_that_leaves_identical_answers_is_an_error():
    proc, tok, ad, rec, full = lengths(chosen="The cat is red.", rejected="The cat is blue.")
    with pytest.raises(EncodeError) as e:
        encode_pair(rec, proc, ad, max_length=len(full.prompt_ids) + 3)
    assert e.value.kind == "identical" and "max_length" in str(e.value)


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("change, kind", [
    (lambda r: r.images.pop(), "image_count"),
    (lambda r: r.chosen[0]["content"].insert(0, {"type": "image"}), "image_in_answer"),
    (lambda r: r.prompt[-1]["content"].insert(0, {"type": "video"}), "video"),
    (lambda r: setattr(r, "rejected_images", []), "image_count"),
    (lambda r: r.rejected.clear(), "empty_completion"),
])
def test_bad_records_raise_encode_errors(change, kind):
    proc, tok, ad = setup("idefics3")
    rec = tiny_record(1, rec_id="row-3")
    change(rec)
    with pytest.raises(EncodeError) as e:
        encode_pair(rec, proc, ad, max_length=None)
    assert e.value.kind == kind and "row-3" in str(e.value) and e.value.fix


def test_images_on_a_text_only_model_are_an_error():
    proc, tok, ad = setup("causal_lm")
    with pytest.raises(EncodeError) as e:
        encode_pair(tiny_record(1), proc, ad, max_length=None)
    assert e.value.kind == "images_on_text_model"


def test_unloadable_image_names_the_field():
    proc, tok, ad = setup("llava")
    rec = tiny_record(1)
    rec.images = [ImageRef(path="/nonexistent/cat.png", origin="cat.png")]
    with pytest.raises(EncodeError) as e:
        encode_pair(rec, proc, ad, max_length=None)
    assert e.value.kind == "image" and "images" in str(e.value)


def test_encode_error_pickles_for_dataloader_workers():
    import pickle

    proc, tok, ad = setup("causal_lm")
    with pytest.raises(EncodeError) as e:
        encode_pair(tiny_record(1, rec_id="x"), proc, ad, max_length=None)
    back = pickle.loads(pickle.dumps(e.value))
    assert (back.kind, str(back), back.fix) == (e.value.kind, str(e.value), e.value.fix)


def test_missing_chat_template_is_named():
    tok = build_tokenizer("causal_lm")
    tok.chat_template = None
    with pytest.raises(EncodeError) as e:
        encode_pair(tiny_record(0), tok, "causal_lm", max_length=None)
    assert e.value.kind == "no_chat_template"


def test_template_errors_become_encode_errors():
    tok = build_tokenizer("causal_lm")
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(EncodeError) as e:
        encode_pair(tiny_record(0), tok, "causal_lm", max_length=None)
    assert e.value.kind == "chat_template" and "roles must alternate" in str(e.value)


# ------------------------------------------------------------------------------ prefix fallbacks
def text_tokenizer(template):
    tok = build_tokenizer("causal_lm")
    tok.chat_template = template
    return tok


def test_bpe_merge_across_the_boundary_keeps_inference_prompt_tokens():
    # "assistant: " + "the cat" tokenizes as ':' 'Ġthe' in full, but ':' 'Ġ' for the prompt alone
    tok = text_tokenizer("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    pair = encode_pair(tiny_record(0, chosen="the cat", rejected="a dog"), tok, "causal_lm", max_length=None)
    prompt_text = "user: What is the cat doing?\nassistant: "
    assert pair.prompt_ids == tok(prompt_text, add_special_tokens=False)["input_ids"]
    assert pair.chosen_ids == tok("the cat\n", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_generation_prompt_rendered_differently_uses_the_common_prefix(caplog):
    tok = text_tokenizer("{% for m in messages %}<|im_start|>{{ m['role'] }}:{{ m['content'] }}<|im_end|>{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant:[think][/think]{% endif %}")
    with caplog.at_level(logging.WARNING, logger="vlmdpo.encode"):
        pair = encode_pair(tiny_record(0), tok, "causal_lm", max_length=None)
    assert tok.decode(pair.prompt_ids).endswith("<|im_start|>assistant:")
    assert tok.decode(pair.chosen_ids) == CHOSEN + "<|im_end|>"
    assert "common prefix" in caplog.text


# ------------------------------------------------------------------------------ max_prompt_length / max_completion_length
@pytest.mark.parametrize("family", FAMILIES)
def test_max_prompt_length_cuts_old_text_from_the_left(family):
    proc, tok, ad = setup(family)
    rec = tiny_record(0 if family == "causal_lm" else 1, system="Be brief.", history=True)
    full = encode_pair(rec, proc, ad, max_length=None)
    cut = encode_pair(rec, proc, ad, max_length=None, max_prompt_length=len(full.prompt_ids) - 5)
    assert cut.prompt_ids == full.prompt_ids[5:] and cut.truncated
    assert cut.chosen_ids == full.chosen_ids and cut.rejected_ids == full.rejected_ids
    same = encode_pair(rec, proc, ad, max_length=None, max_prompt_length=len(full.prompt_ids))
    assert same.prompt_ids == full.prompt_ids and not same.truncated


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_max_prompt_length_never_cuts_image_tokens(family):
    from vlmdpo.encode import is_length_problem

    proc, tok, ad = setup(family)
    rec = tiny_record(1, system="Be brief.", history=True)
    full = encode_pair(rec, proc, ad, max_length=None)
    first_image = full.prompt_ids.index(ad.image_token)
    # the longest cut allowed stops before the image's span (its opening tokens included)
    allowed = [k for k in range(1, first_image + 2) if _cuts(rec, proc, ad, len(full.prompt_ids) - k)]
    assert allowed and allowed == list(range(1, max(allowed) + 1)) and max(allowed) <= first_image
    kept = encode_pair(rec, proc, ad, max_length=None, max_prompt_length=len(full.prompt_ids) - max(allowed))
    assert n_image_tokens(kept, ad) == n_image_tokens(full, ad)
    assert tok.convert_ids_to_tokens(full.prompt_ids[max(allowed) - 1]) not in tok.all_special_tokens
    with pytest.raises(EncodeError) as e:
        encode_pair(rec, proc, ad, max_length=None, max_prompt_length=len(full.prompt_ids) - first_image - 1)
    assert e.value.kind == "prompt_too_long" and is_length_problem(e.value.kind)
    assert "max_prompt_length" in str(e.value) and "image tokens are never cut" in str(e.value)


def _cuts(rec, proc, ad, limit) -> bool:
    try:
        encode_pair(rec, proc, ad, max_length=None, max_prompt_length=limit)
    except EncodeError:
        return False
    return True


@pytest.mark.parametrize("family", ["idefics3", "causal_lm"])
def test_max_completion_length_cuts_each_answer(family):
    proc, tok, ad = setup(family)
    rec = tiny_record(0 if family == "causal_lm" else 1)
    full = encode_pair(rec, proc, ad, max_length=None)
    cut = encode_pair(rec, proc, ad, max_length=None, max_completion_length=3)
    assert cut.chosen_ids == full.chosen_ids[:3] and cut.rejected_ids == full.rejected_ids[:3] and cut.truncated
    assert cut.prompt_ids == full.prompt_ids
    longest = max(len(full.chosen_ids), len(full.rejected_ids))
    whole = encode_pair(rec, proc, ad, max_length=None, max_completion_length=longest)
    assert whole.chosen_ids == full.chosen_ids and whole.rejected_ids == full.rejected_ids and not whole.truncated
    # together with max_length: the completion limit first, then max_length's rule as before
    both = encode_pair(rec, proc, ad, max_length=len(full.prompt_ids) + 2, max_completion_length=3)
    assert both.chosen_ids == full.chosen_ids[:2]
