"""export: LoRA merged into the base, saved as a plain HF folder that transformers alone loads and that
generates exactly the unmerged adapter model's greedy tokens (fp32)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from inference_helpers import make_adapter, write_image
from vlmdpo.card import last_metrics
from vlmdpo.export import export_model, target_dtype
from vlmdpo.inference import ModelDirError, load_for_inference, user_message

# one family per kind of vision input: pixel_attention_mask, image_grid_thw + mRoPE, image_sizes, token_type_ids
VLM_FAMILIES = ("idefics3", "qwen2_vl", "llava_next", "gemma3")


def _inputs(processor, image, is_vlm: bool):
    msgs = [user_message("what is shown here?", 1 if is_vlm else 0)]
    if not is_vlm:
        text = processor.apply_chat_template([{"role": "user", "content": "what is shown here?"}],
                                             add_generation_prompt=True, tokenize=False)
        return dict(processor(text, return_tensors="pt", add_special_tokens=False))
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return dict(processor(text=[text], images=[[image]], return_tensors="pt"))


def _greedy(model, inputs, n: int = 10) -> list[int]:
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits.float()


@pytest.mark.parametrize("family", VLM_FAMILIES + ("causal_lm",))
def test_export_generates_the_adapter_models_greedy_tokens(tmp_path: Path, family: str):
    from PIL import Image
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    adapter = make_adapter(tmp_path / "run", family)
    out = tmp_path / "merged"
    result = export_model(str(adapter), out)
    assert result.merged and result.dtype == "float32" and result.base_name == f"tiny:{family}"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "README.md", "tokenizer_config.json"} <= names
    assert any(n.endswith(".safetensors") for n in names) and "adapter_config.json" not in names
    assert not any(n.endswith(".bin") for n in names)

    is_vlm = family != "causal_lm"
    unmerged = load_for_inference(adapter, device="cpu")
    # plain transformers, no vlmdpo or peft involved in loading
    if is_vlm:
        plain = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(out)
    else:
        plain = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        processor = AutoTokenizer.from_pretrained(out)
    plain.eval()
    assert processor.chat_template, "the chat template must travel with the export"
    eos = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    tok = getattr(processor, "tokenizer", processor)
    assert tok.eos_token_id in (eos if isinstance(eos, list) else [eos])  # plain generate() stops at end of turn
    image = Image.open(write_image(tmp_path / "x.png", 3)).convert("RGB")
    inputs = _inputs(processor, image, is_vlm)

    adapter_logits = _logits(unmerged.model, inputs)
    with unmerged.model.disable_adapter():
        base_logits = _logits(unmerged.model, inputs)
    merged_logits = _logits(plain, inputs)
    # the adapter matters (else this test could not fail) and the merge reproduces it
    assert (adapter_logits - base_logits).abs().max() > 1e-3
    torch.testing.assert_close(merged_logits, adapter_logits, atol=2e-5, rtol=1e-4)
    assert _greedy(plain, inputs) == _greedy(unmerged.model, inputs)
    if is_vlm:  # the trained projector copy (modules_to_save) replaced the base's projector
        from vlmdpo.model.families import adapter_for
        from vlmdpo.model.tiny import build_tiny

        base_model, _ = build_tiny(family)
        path = adapter_for(base_model).projector[0]
        before, after = base_model.get_submodule(path).state_dict(), plain.get_submodule(path).state_dict()
        assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


def test_model_card_carries_config_data_stats_and_eval_results(tmp_path: Path):
    run = make_adapter(tmp_path / "run", "causal_lm")
    (run / "vlmdpo_config.yaml").write_text("model_name_or_path: tiny:causal_lm\nbeta: 0.25\nloss_type: [sigmoid, sft]\n")
    (run / "train_results.json").write_text(json.dumps({
        "global_step": 12, "train": {"loss": 0.5, "rewards/accuracies": 0.75}, "eval": {"eval_loss": 0.6},
        "best_eval_loss": None, "n_train_pairs": 118, "n_eval_pairs": 10, "dropped_pairs": 1}))
    (run / "rejected_rows.jsonl").write_text('{"row": 3}\n{"row": 9}\n')
    (run / "eval_results.json").write_text(json.dumps({"tuned": {"reward_accuracy": 0.875}, "base": {"reward_accuracy": 0.5}}))
    out = tmp_path / "merged"
    export_model(str(run), out)
    card = (out / "README.md").read_text()
    assert "beta: 0.25" in card and "- sft" in card
    assert "| n_train_pairs | 118 |" in card and "| invalid rows skipped | 2 |" in card and "best_eval_loss" not in card
    assert "| rewards/accuracies | 0.75 |" in card
    assert "| tuned/reward_accuracy | 0.875 |" in card and "| base/reward_accuracy | 0.5 |" in card
    assert "eval_loss" not in card  # eval_results.json wins over the training run's own eval numbers
    assert "AutoModelForCausalLM" in card and "library_name: transformers" in card
    assert (out / "vlmdpo_config.yaml").is_file()


def test_card_sections_fall_back_to_metrics_log_and_training_eval(tmp_path: Path):
    from vlmdpo.card import card_sections

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 0.69}\n{"step": 2, "loss": 0.5}\n')
    assert card_sections(tmp_path) == {"Data": {}, "Final training metrics": {"step": 2, "loss": 0.5}, "Evaluation": {}}
    (tmp_path / "train_results.json").write_text(json.dumps({"eval": {"eval_loss": 0.6}, "n_train_pairs": 4}))
    ckpt = tmp_path / "checkpoint-2"
    ckpt.mkdir()
    sections = card_sections(ckpt)  # a checkpoint inside output_dir finds the run's files in its parent
    assert sections["Evaluation"] == {"eval_loss": 0.6} and sections["Data"] == {"n_train_pairs": 4}
    assert card_sections(None) == {"Data": {}, "Final training metrics": {}, "Evaluation": {}}


def test_output_must_be_new_unless_forced(tmp_path: Path):
    run = make_adapter(tmp_path / "run", "causal_lm")
    out = tmp_path / "merged"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(ModelDirError, match="--force"):
        export_model(str(run), out)
    assert (out / "old.txt").read_text() == "keep me"
    export_model(str(run), out, force=True)
    assert not (out / "old.txt").exists() and (out / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged.tmp")]


def test_export_casts_to_the_requested_dtype(tmp_path: Path):
    from transformers import AutoModelForCausalLM

    run = make_adapter(tmp_path / "run", "causal_lm")
    res = export_model(str(run), tmp_path / "bf16", dtype="bfloat16")
    assert res.dtype == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ModelDirError, match="unknown dtype"):
        export_model(str(run), tmp_path / "x", dtype="fp8")


def test_target_dtype_rules():
    assert target_dtype("auto", {"dtype": "bfloat16"}, "float32") == torch.bfloat16
    assert target_dtype("auto", {"dtype": "auto"}, "float16") == torch.float16
    assert target_dtype("auto", {}, None) == torch.float32
    assert target_dtype("float16", {"dtype": "bfloat16"}, None) == torch.float16


def test_last_metrics_skips_a_partial_line(tmp_path: Path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"loss": 1.0, "step": 1}\n{"loss": 0.5}\n{"loss": 0.')
    assert last_metrics(p) == {"loss": 0.5, "step": 1}


def test_export_of_a_full_model_folder_needs_no_merge(tmp_path: Path):
    from transformers import AutoModelForCausalLM

    from vlmdpo.model.tiny import build_tiny

    model, tokenizer = build_tiny("causal_lm")
    model.save_pretrained(tmp_path / "full")
    tokenizer.save_pretrained(tmp_path / "full")
    res = export_model(str(tmp_path / "full"), tmp_path / "out")
    assert not res.merged and "full model" in (tmp_path / "out" / "README.md").read_text()
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    for (name, a), (_, b) in zip(model.named_parameters(), again.named_parameters()):
        assert torch.equal(a, b), name
