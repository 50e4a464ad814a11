"""Text that is already in a chat template (TRL's "standard" rows written for one model).

Such text is used as is, as TRL does: the template is not applied a second time. What the
model's own template would add around it is derived from the template itself (`TemplateFacts`):
the BOS it writes first, the assistant header that opens the answer (moved from the
completions into the prompt, so only the answer is trained on), and how it writes an image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from vlmdpo.model.families import FamilyAdapter, template_markers
from vlmdpo.types import Message, PreferenceRecord

Render = Callable[..., str]  # render(messages, add_generation_prompt=False) -> text


@dataclass(frozen=True)
class TemplateFacts:
    own: frozenset[str]  # markers this model's template writes
    header: str  # what the generation prompt adds: the assistant header
    image: str  # how the template writes one image part
    bos: str | None  # written by the template before the first turn


def field_markers(record: PreferenceRecord) -> dict[str, list[str]]:
    """field name -> the known template markers in its text (only fields that hold some)."""
    known = template_markers()
    found = {}
    for name, messages in (("prompt", record.prompt), ("chosen", record.chosen), ("rejected", record.rejected)):
        text = joined(messages, image="")
        hits = [m for m in known if m in text]
        if hits:
            found[name] = hits
    return found


def foreign(found: dict[str, list[str]], facts: TemplateFacts) -> tuple[str, str, str] | None:
    """(field, marker, template name) of the first marker that is not the model's own, else None."""
    owners = template_markers()
    for name, hits in found.items():
        for marker in hits:
            if marker not in facts.own:
                return name, marker, owners[marker]
    return None


_FACTS: dict[tuple, TemplateFacts] = {}


def template_facts(render: Render, adapter: FamilyAdapter, template: str, bos: str | None) -> TemplateFacts:
    """What the model's template writes around a conversation; cached per template text."""
    key = (template, adapter.name, bos)
    if key not in _FACTS:
        def user(*parts: dict) -> list[Message]:
            return [{"role": "user", "content": list(parts) if adapter.is_vlm else "Q"}]

        text = {"type": "text", "text": "Q"}
        plain = render(user(text))
        gen = render(user(text), add_generation_prompt=True)
        answer = {"type": "text", "text": "A"} if adapter.is_vlm else None
        sample = render(user(text) + [{"role": "assistant", "content": [answer] if answer else "A"}])
        image = _inserted(plain, render(user({"type": "image"}, text))) if adapter.is_vlm else ""
        own = set(adapter.template_markers) | {m for m in template_markers() if m in sample}
        _FACTS[key] = TemplateFacts(own=frozenset(own), header=gen[len(plain):] if gen.startswith(plain) else "",
                                    image=image.strip() or "<image>",
                                    bos=bos if bos and plain.startswith(bos) else None)
    return _FACTS[key]


def as_is(record: PreferenceRecord, facts: TemplateFacts) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) texts of a pre-templated record, ready to tokenize: the text as
    given, with the template's BOS in front and its assistant header at the end of the prompt."""
    prompt, chosen, rejected = (joined(m, facts.image) for m in (record.prompt, record.chosen, record.rejected))
    if facts.bos and not prompt.startswith(facts.bos):
        prompt = facts.bos + prompt
    head = facts.header
    if head and not prompt.endswith(head):
        # TRL's blog writes the header into chosen / rejected ("Assistant: ..."); it is the prompt's end
        prompt += head
        chosen, rejected = (t[len(head):] if t.startswith(head) else t for t in (chosen, rejected))
    return prompt, chosen, rejected


def joined(messages: list[Message], image: str) -> str:
    """The messages' text in order, each image part written as `image` (readers split text only
    around placeholders, so this restores what the row held)."""
    out = []
    for m in messages:
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        out += [p.get("text") or "" if p.get("type") == "text" else image if p.get("type") == "image" else ""
                for p in parts]
    return "".join(out)


def _inserted(without: str, with_part: str) -> str:
    """The text `with_part` has in the place where it differs from `without`."""
    n = 0
    while n < min(len(without), len(with_part)) and without[n] == with_part[n]:
        n += 1
    k = 0
    while k < min(len(without), len(with_part)) - n and without[-1 - k] == with_part[-1 - k]:
        k += 1
    return with_part[n:len(with_part) - k]
