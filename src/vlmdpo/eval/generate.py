"""Greedy answers to held-out prompts, and whether they are grounded in the image.

Prompts are encoded by `vlmdpo.encode` exactly as in training (same template, same image
tokens), left-padded, and decoded greedily, so a difference between base and tuned answers
comes from the weights alone. A pair's ground truth is read from its `meta` (`question_kind`
and `truth`, as `vlmdpo demo-data` writes them); pairs without it get an answer but no score.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from vlmdpo.inference.generate import stop_token_ids
from vlmdpo.types import EncodedPair, PreferenceRecord


def prompt_batch(pairs: Sequence[EncodedPair], *, pad_token_id: int, family: Any) -> dict[str, Any]:
    """Left-padded prompt ids + attention mask + the pairs' vision inputs, ready for generate()."""
    from vlmdpo.model.families import adapter_for

    adapter = adapter_for(family)
    width = max(len(p.prompt_ids) for p in pairs)
    input_ids = torch.full((len(pairs), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, p in enumerate(pairs):
        n = len(p.prompt_ids)
        input_ids[row, width - n:] = torch.tensor(p.prompt_ids, dtype=torch.long)
        attention_mask[row, width - n:] = 1
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    inputs.update(adapter.stack_vision([p.vision for p in pairs]))
    if adapter.token_type_key is not None:
        inputs[adapter.token_type_key] = adapter.token_types(input_ids)
    return inputs


def _model_device_dtype(model) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


def generate_answers(model, tokenizer, pairs: Sequence[EncodedPair], *, family: Any, pad_token_id: int,
                     max_new_tokens: int = 32, batch_size: int = 8,
                     on_batch: Callable[[int], None] | None = None) -> list[str]:
    """Greedy answer text for each pair's prompt, in order (special tokens removed, stripped)."""
    device, dtype = _model_device_dtype(model)
    stops = stop_token_ids(model, tokenizer)
    answers: list[str] = []
    was_training = model.training
    model.eval()
    # Rows with and without images cannot share one forward (vision inputs would not line up).
    order = sorted(range(len(pairs)), key=lambda i: (bool(pairs[i].vision), len(pairs[i].prompt_ids)))
    by_index: dict[int, str] = {}
    try:
        start = 0
        while start < len(order):
            has_vision = bool(pairs[order[start]].vision)
            chunk = [i for i in order[start:start + batch_size] if bool(pairs[i].vision) == has_vision]
            start += len(chunk)
            inputs = prompt_batch([pairs[i] for i in chunk], pad_token_id=pad_token_id, family=family)
            inputs = {k: (v.to(device=device, dtype=dtype) if torch.is_floating_point(v) else v.to(device))
                      for k, v in inputs.items()}
            with torch.no_grad():
                out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                                     eos_token_id=stops or None, pad_token_id=pad_token_id)
            new = out[:, inputs["input_ids"].shape[1]:]
            for i, row in zip(chunk, new):
                by_index[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
            if on_batch is not None:
                on_batch(len(chunk))
    finally:
        model.train(was_training)
    answers = [by_index[i] for i in range(len(pairs))]
    return answers


@dataclass(frozen=True)
class Graded:
    id: str
    kind: str | None
    truth: str | None
    answer: str
    correct: bool | None  # None: the pair carries no ground truth


def truth_of(record: PreferenceRecord) -> tuple[str | None, str | None]:
    """(question kind, true value) from a demo-data record's meta, else (None, None)."""
    meta = record.meta or {}
    nested = meta.get("meta") if isinstance(meta.get("meta"), dict) else {}
    kind = meta.get("question_kind", nested.get("question_kind"))
    truth = meta.get("truth", nested.get("truth"))
    return (str(kind), str(truth)) if kind is not None and truth is not None else (None, None)


def grade_answers(records: Sequence[PreferenceRecord], answers: Sequence[str]) -> list[Graded]:
    from vlmdpo.demo_data import KINDS, is_grounded

    if len(records) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(records)} records")
    out = []
    for rec, ans in zip(records, answers):
        kind, truth = truth_of(rec)
        ok = is_grounded(kind, truth, ans) if kind in KINDS and truth is not None else None
        out.append(Graded(rec.id, kind, truth, ans, ok))
    return out


def grounded_accuracy(graded: Sequence[Graded]) -> dict[str, Any]:
    """Overall and per-kind share of grounded answers among the pairs that carry a truth."""
    scored = [g for g in graded if g.correct is not None]
    result: dict[str, Any] = {"n": len(scored), "n_unscored": len(graded) - len(scored),
                              "accuracy": (sum(g.correct for g in scored) / len(scored)) if scored else float("nan")}
    by_kind: dict[str, dict[str, float]] = {}
    for kind in sorted({g.kind for g in scored}):
        ks = [g for g in scored if g.kind == kind]
        by_kind[kind] = {"n": len(ks), "accuracy": sum(g.correct for g in ks) / len(ks)}
    result["by_kind"] = by_kind
    return result
