"""templated.py: what a template writes around a conversation, and pre-templated text as is."""
from __future__ import annotations

from vlmdpo.model.families import adapter_for, template_markers
from vlmdpo.model.tiny import build_tiny_processor
from vlmdpo.templated import as_is, field_markers, foreign, template_facts
from vlmdpo.types import PreferenceRecord


def _facts(family):
    proc = build_tiny_processor(family)

    def render(messages, **kw):
        return proc.apply_chat_template(messages, tokenize=False, **kw)

    return template_facts(render, adapter_for(family), proc.chat_template, proc.tokenizer.bos_token)


def _rec(prompt, chosen, rejected="Assistant: No.<end_of_utterance>\n"):
    def msg(role, text):
        return [{"role": role, "content": [{"type": "text", "text": text}]}]

    return PreferenceRecord(id="x", prompt=msg("user", prompt), chosen=msg("assistant", chosen),
                            rejected=msg("assistant", rejected))


def test_facts_come_from_the_template():
    smol = _facts("idefics3")
    assert smol.header == "Assistant:" and smol.image == "<image>" and smol.bos == "<|im_start|>"
    assert "<end_of_utterance>" in smol.own and "<|im_end|>" not in smol.own
    qwen = _facts("qwen2_vl")
    assert qwen.header == "<|im_start|>assistant\n" and qwen.image == "<|vision_start|><|image_pad|><|vision_end|>"
    assert qwen.bos is None and "<|im_end|>" in qwen.own
    gemma = _facts("gemma3")
    assert gemma.header == "<start_of_turn>model\n" and gemma.image == "<start_of_image>"


def test_every_family_marker_is_known():
    known = template_markers()
    assert known["<|im_end|>"].startswith("ChatML") and known["<start_of_turn>"] == "gemma3"
    assert "<|start_header_id|>" in known  # templates no adapter owns are recognised too


def test_as_is_moves_the_assistant_header_into_the_prompt():
    rec = _rec("User: Hi.<end_of_utterance>\n", "Assistant: Yes.<end_of_utterance>\n")
    found = field_markers(rec)
    assert set(found) == {"prompt", "chosen", "rejected"}
    facts = _facts("idefics3")
    assert foreign(found, facts) is None
    prompt, chosen, rejected = as_is(rec, facts)
    assert prompt == "<|im_start|>User: Hi.<end_of_utterance>\nAssistant:"
    assert (chosen, rejected) == (" Yes.<end_of_utterance>\n", " No.<end_of_utterance>\n")


def test_foreign_names_field_marker_and_template():
    rec = _rec("Hi.", "<start_of_turn>model\nYes.<end_of_turn>\n", "No.")
    assert foreign(field_markers(rec), _facts("qwen2_vl")) == ("chosen", "<start_of_turn>", "gemma3")
