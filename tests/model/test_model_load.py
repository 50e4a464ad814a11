"""load_for_training: tiny / local models, LoRA and full fine-tuning, freezing, clear errors."""
from __future__ import annotations

import json

import pytest
import torch
from bundle_helpers import load_bundle
from model_cases import cfg, dpo_step, make_batch, pair_records

from vlmdpo.inference import ModelLoadError
from vlmdpo.model.families import adapter_for
from vlmdpo.model.logps import batch_logps
from vlmdpo.model.parts import part_of
from vlmdpo.model.tiny import FAMILIES, build_tiny


def trainable(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def module_of(peft_name: str) -> str:
    """'base_model.model.model.x.q_proj.lora_A.default.weight' -> 'model.x.q_proj'."""
    name = peft_name.removeprefix("base_model.model.")
    for marker in (".lora_A.", ".lora_B.", ".modules_to_save."):
        if marker in name:
            return name.split(marker)[0]
    return name


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_defaults_adapt_the_language_model_and_train_the_projector(family):
    bundle = load_bundle(cfg(family))
    ad = bundle.family
    names = trainable(bundle.model)
    lora = [n for n in names if ".lora_" in n]
    saved = [n for n in names if ".modules_to_save." in n]
    assert lora and len(lora) + len(saved) == len(names)
    assert {part_of(module_of(n), ad) for n in lora} == {"language_model"}
    assert not any("lm_head" in n for n in lora)  # log-probs read the head's weight directly
    if family == "causal_lm":
        assert not saved and not bundle.is_vlm
    else:
        assert {part_of(module_of(n), ad) for n in saved} == {"projector"} and bundle.is_vlm
    assert bundle.pad_token_id == bundle.tokenizer.pad_token_id
    assert bundle.family.image_token == adapter_for(bundle.model).image_token  # bound to the model's ids


def test_lora_on_every_part_and_listed_targets():
    every = load_bundle(cfg("llava", lora_modules="all", freeze_vision_tower=False))
    parts = {part_of(module_of(n), every.family) for n in trainable(every.model)}
    assert parts == {"vision_tower", "projector", "language_model"}
    assert not any(".modules_to_save." in n for n in trainable(every.model))
    listed = load_bundle(cfg("llava", lora_target=["q_proj", "v_proj"]))
    lora = {module_of(n).rsplit(".", 1)[-1] for n in trainable(listed.model) if ".lora_" in n}
    assert lora == {"q_proj", "v_proj"}


def test_unfrozen_tower_under_lora_trains_as_a_full_copy():
    bundle = load_bundle(cfg("qwen2_vl", freeze_vision_tower=False))
    saved = {module_of(n) for n in trainable(bundle.model) if ".modules_to_save." in n}
    assert saved == {"model.visual"}  # the merger (projector) is inside it


@pytest.mark.parametrize("flags, parts", [
    ({}, {"projector", "language_model"}),
    ({"freeze_vision_tower": False}, {"vision_tower", "projector", "language_model"}),
    ({"freeze_language_model": True}, {"projector"}),
    ({"freeze_projector": True, "freeze_language_model": True, "freeze_vision_tower": False}, {"vision_tower"}),
])
def test_full_finetuning_freezes_the_named_parts(flags, parts):
    bundle = load_bundle(cfg("qwen2_vl", finetuning_type="full", **flags))
    assert {part_of(n, bundle.family) for n in trainable(bundle.model)} == parts


@pytest.mark.parametrize("ft", ["lora", "full"])
@pytest.mark.parametrize("family", FAMILIES)
def test_one_step_changes_only_trainable_parameters(family, ft):
    bundle = load_bundle(cfg(family, finetuning_type=ft))
    before = {n: p.detach().clone() for n, p in bundle.model.named_parameters()}
    dpo_step(bundle)
    changed = {n for n, p in bundle.model.named_parameters() if not torch.equal(p, before[n])}
    with_grad = {n for n, p in bundle.model.named_parameters()
                 if p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0}
    assert changed and changed == with_grad
    assert changed <= set(trainable(bundle.model))
    if family != "causal_lm":  # the image reached the loss through the trainable projector
        assert any(part_of(module_of(n), bundle.family) == "projector" for n in changed)


def test_gradient_checkpointing_with_lora_still_trains():
    bundle = load_bundle(cfg("idefics3", gradient_checkpointing=True))
    dpo_step(bundle)
    grads = [p.grad for n, p in bundle.model.named_parameters() if ".lora_B." in n]
    assert grads and all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_dtype_option():
    bundle = load_bundle(cfg("causal_lm", finetuning_type="full", dtype="bfloat16"))
    assert bundle.model.dtype == torch.bfloat16


@pytest.mark.parametrize("family", ["qwen2_vl", "causal_lm"])
def test_saved_folder_loads_with_auto_classes(family, tmp_path):
    model, proc = build_tiny(family)
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    bundle = load_bundle(cfg(family, model_name_or_path=str(tmp_path), finetuning_type="full", dtype="float32"))
    assert type(bundle.model) is type(model) and bundle.family.name == family
    batch, _ = make_batch(pair_records(family)[:1], model, proc)
    with torch.no_grad():
        a, b = batch_logps(model, batch), batch_logps(bundle.model, batch)
    torch.testing.assert_close(a.chosen_logps, b.chosen_logps)


# ------------------------------------------------------------------------------ errors
def custom_code_folder(path):
    (path / "config.json").write_text(json.dumps({
        "model_type": "vlmdpo_custom_test", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}))
    (path / "configuration_custom.py").write_text("raise RuntimeError('must not run without trust')\n")
    return str(path)


@pytest.mark.parametrize("overrides, match", [
    ({"model_name_or_path": "tiny:nope"}, "unknown tiny model"),
    ({"model_name_or_path": "builtin:huge"}, "unknown built-in model"),
    ({"model_name_or_path": None}, "model_name_or_path is not set"),
    ({"finetuning_type": "qlora"}, "cannot be loaded quantized"),
    ({"finetuning_type": "adapter"}, "finetuning_type 'adapter'"),
    ({"dtype": "float8"}, "dtype 'float8'"),
    ({"lora_target": ["no_such_proj"]}, "matches no linear layer"),
    ({"finetuning_type": "full", "freeze_language_model": True, "freeze_projector": True}, "every parameter is frozen"),
    ({"model_name_or_path": "/no/such/model/folder"}, "does not exist"),
])
def test_bad_settings_are_clear_errors(overrides, match):
    with pytest.raises(ModelLoadError, match=match):
        load_bundle(cfg(**overrides))


def test_custom_code_model_asks_for_trust_remote_code(tmp_path):
    with pytest.raises(ModelLoadError, match="set trust_remote_code: true"):
        load_bundle(cfg(model_name_or_path=custom_code_folder(tmp_path), finetuning_type="full"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_qlora_without_cuda_says_so(tmp_path):
    model, proc = build_tiny("causal_lm")
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="CUDA GPU"):
        load_bundle(cfg(model_name_or_path=str(tmp_path), finetuning_type="qlora"))
