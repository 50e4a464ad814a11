"""Family adapters: lookup, token ids, module parts."""
from __future__ import annotations

import pytest
from model_cases import VLM_FAMILIES

from vlmdpo.model.families import ADAPTERS, UnsupportedModelError, adapter_for
from vlmdpo.model.parts import part_of
from vlmdpo.model.tiny import FAMILIES, build_tiny_config, build_tiny_processor


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_for_model_and_config(family, tiny_model):
    model, proc = tiny_model(family)
    ad = adapter_for(model)
    assert ad.name == family and adapter_for(model.config).name == family
    if family != "causal_lm":
        tok = proc.tokenizer
        assert ad.image_token == proc.image_token_id if family != "gemma3" else tok.image_token_id
        assert ad.image_token is not None


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_every_part_has_parameters(family, tiny_model):
    model, _ = tiny_model(family)
    ad = adapter_for(model)
    seen = {part_of(name, ad) for name, _ in model.named_parameters()}
    assert seen == {"vision_tower", "projector", "language_model"}
    names = {n for n, _ in model.named_modules()} | {n for n, _ in model.named_parameters()}
    for paths in ad.parts().values():
        for path in paths:  # every listed path exists in the real model (lm_head may be tied)
            assert path in names, path


def test_qwen_merger_is_the_projector_inside_the_tower():
    ad = adapter_for(build_tiny_config("qwen2_vl"))
    assert part_of("model.visual.merger.mlp.0.weight", ad) == "projector"
    assert part_of("model.visual.blocks.0.attn.qkv.weight", ad) == "vision_tower"
    assert part_of("lm_head.weight", ad) == "language_model"


def test_unknown_vlm_is_a_clear_error():
    class Cfg:
        model_type = "fancy_vlm"
        vision_config = object()

    with pytest.raises(UnsupportedModelError, match="fancy_vlm.*supported families"):
        adapter_for(Cfg())
    with pytest.raises(UnsupportedModelError, match="unknown model family"):
        adapter_for("nope")


def test_text_configs_map_to_causal_lm():
    class Cfg:
        model_type = "mistral"

    assert adapter_for(Cfg()).name == "causal_lm"
    assert set(ADAPTERS) == set(FAMILIES)


def test_processor_token_ids_agree_with_config():
    # the tiny processors and configs must name the same special ids, or images would not scatter
    for family in VLM_FAMILIES:
        ad = adapter_for(build_tiny_config(family))
        tok = build_tiny_processor(family).tokenizer
        assert tok.convert_ids_to_tokens(ad.image_token) in ("<image>", "<|image_pad|>", "<image_soft_token>")


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_quirk_fields_match_the_model_classes(family, tiny_model):
    # The fast path redoes what each family's forward does; these fields say what that is. Read
    # the real classes here so that a transformers change that moves a quirk fails a test.
    import inspect

    model, _ = tiny_model(family)
    ad = adapter_for(model)
    assert (ad.rope == "mrope") == callable(getattr(model.model, "get_rope_index", None))
    if ad.is_vlm:  # causal_lm covers every text-only class: the next test checks a soft-capping one
        assert ad.forward_softcaps == ("final_logit_softcapping" in inspect.getsource(type(model).forward))
    assert ad.bidirectional_images == (getattr(model.config, "model_type", None) == "gemma3")


def test_logit_softcap_only_where_the_forward_applies_it():
    import inspect

    import transformers

    assert "final_logit_softcapping" in inspect.getsource(transformers.Gemma2ForCausalLM.forward)
    gemma2 = transformers.Gemma2Config(final_logit_softcapping=30.0)
    assert ADAPTERS["causal_lm"].logit_softcap(gemma2) == 30.0
    assert ADAPTERS["gemma3"].logit_softcap(build_tiny_config("gemma3")) is None  # its config has 30.0
    assert ADAPTERS["causal_lm"].logit_softcap(build_tiny_config("causal_lm")) is None
