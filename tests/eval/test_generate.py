from __future__ import annotations

import pytest

from vlmdpo.eval.generate import Graded, generate_answers, grade_answers, grounded_accuracy, prompt_batch, truth_of
from vlmdpo.types import PreferenceRecord


def _rec(i, kind=None, truth=None, nested=False):
    meta = {} if kind is None else {"question_kind": kind, "truth": truth}
    if nested:
        meta = {"meta": meta}
    return PreferenceRecord(id=f"r{i}", prompt=[], chosen=[], rejected=[], meta=meta)


def test_grading_reads_truth_from_meta_and_scores_by_hand():
    records = [_rec(0, "color", "red"), _rec(1, "count", "3"), _rec(2, "position", "left", nested=True), _rec(3)]
    answers = ["The circle is red.", "There are two squares.", "It is on the left.", "Anything."]
    graded = grade_answers(records, answers)
    assert [g.correct for g in graded] == [True, False, True, None]
    acc = grounded_accuracy(graded)
    assert acc["n"] == 3 and acc["n_unscored"] == 1
    assert acc["accuracy"] == pytest.approx(2 / 3)
    assert acc["by_kind"] == {"color": {"n": 1, "accuracy": 1.0}, "count": {"n": 1, "accuracy": 0.0},
                              "position": {"n": 1, "accuracy": 1.0}}
    assert truth_of(_rec(9)) == (None, None)


def test_grading_needs_one_answer_per_record():
    with pytest.raises(ValueError, match="2 answers for 1 records"):
        grade_answers([_rec(0, "color", "red")], ["a", "b"])


def test_nothing_scored_is_nan():
    import math

    acc = grounded_accuracy([Graded("x", None, None, "hi", None)])
    assert acc["n"] == 0 and math.isnan(acc["accuracy"])


def test_prompt_batch_left_pads():
    from vlmdpo.types import EncodedPair

    pairs = [EncodedPair("a", [5, 6, 7], [1], [2]), EncodedPair("b", [9], [1], [2])]
    b = prompt_batch(pairs, pad_token_id=0, family="causal_lm")
    assert b["input_ids"].tolist() == [[5, 6, 7], [0, 0, 9]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_batched_generation_equals_one_at_a_time(tiny_idefics3, demo_records):
    """Left padding must not change greedy answers: a real check that masks and positions line up."""
    from vlmdpo.encode import encode_pair
    from vlmdpo.model.families import adapter_for

    model, processor = tiny_idefics3
    fam = adapter_for(model)
    pad = processor.tokenizer.pad_token_id
    pairs = [encode_pair(r, processor, fam, max_length=512) for r in demo_records]
    # make prompt lengths differ, so padding really happens
    assert len({len(p.prompt_ids) for p in pairs}) > 1
    seen = []
    batched = generate_answers(model, processor.tokenizer, pairs, family=fam, pad_token_id=pad, max_new_tokens=6,
                               batch_size=4, on_batch=seen.append)
    single = [generate_answers(model, processor.tokenizer, [p], family=fam, pad_token_id=pad, max_new_tokens=6)[0]
              for p in pairs]
    assert batched == single
    assert sum(seen) == len(pairs)
    assert all(isinstance(a, str) for a in batched)
