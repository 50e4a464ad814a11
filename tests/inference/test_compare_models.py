"""compare: both models answer the same inputs; the tuned model's implicit reward scores every answer."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from inference_helpers import make_adapter, write_image
from vlmdpo.compare import run_compare
from vlmdpo.inference import GenerationSettings

SETTINGS = GenerationSettings(max_new_tokens=5)


def _row(i: int, image: str | None, chosen: str, rejected: str) -> dict:
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": f"question {i}?"}]
    row = {"id": f"r{i}", "prompt": [{"role": "user", "content": content}],
           "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
           "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected}]}]}
    if image:
        row["images"] = [image]
    return row


def _data(folder: Path, rows: list[dict]) -> Path:
    path = folder / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _manual_logp(model, processor, family: str, record) -> tuple[float, float]:
    """Summed completion log-probs by a direct forward over encode_pair's ids (no collate/batch_logps)."""
    from vlmdpo.encode import encode_pair
    from vlmdpo.model.families import adapter_for

    adapter = adapter_for(family)
    pair = encode_pair(record, processor, adapter, max_length=None, truncation="drop")
    out = []
    for completion in (pair.chosen_ids, pair.rejected_ids):
        ids = torch.tensor([pair.prompt_ids + completion])
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].float()
        lp = torch.log_softmax(logits[:-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
        out.append(float(lp[len(pair.prompt_ids) - 1:].sum()))
    return out[0], out[1]


def test_compare_text_only_rewards_match_a_direct_computation(tmp_path: Path):
    run = make_adapter(tmp_path / "run", "causal_lm")
    (run / "vlmdpo_config.yaml").write_text("model_name_or_path: tiny:causal_lm\nbeta: 0.5\n")
    data = _data(tmp_path, [_row(1, None, "the sky is blue", "the sky is green"),
                            _row(2, None, "two cats", "three dogs")])
    out = io.StringIO()
    result = run_compare("tiny:causal_lm", str(run), data=str(data), out=tmp_path / "cmp.html", settings=SETTINGS,
                         device="cpu", stdout=out)
    assert result.beta == 0.5 and len(result.rows) == 2

    from vlmdpo.data.load import load_preferences
    from vlmdpo.inference import load_for_inference

    records = load_preferences(str(data)).records
    base = load_for_inference("tiny:causal_lm", device="cpu")
    tuned = load_for_inference(str(run), device="cpu")
    for row, rec in zip(result.rows, records):
        bc, br = _manual_logp(base.model, base.processor, "causal_lm", rec)
        tc, tr = _manual_logp(tuned.model, tuned.processor, "causal_lm", rec)
        assert row.reward("chosen", 0.5) == pytest.approx(0.5 * (tc - bc), abs=1e-4)
        assert row.reward("rejected", 0.5) == pytest.approx(0.5 * (tr - br), abs=1e-4)
        assert abs(tc - bc) > 1e-3  # the adapter changes the scores, so the test can fail
        expect = "chosen" if tc - bc > tr - br else "rejected"
        assert row.reward_prefers("chosen", "rejected", 0.5) == expect
        assert row.base_answer and row.tuned_answer
        assert set(row.tuned_logps) == {"base_answer", "tuned_answer", "chosen", "rejected"}
    table = out.getvalue()
    assert "r1" in table and "r2" in table and "implicit reward prefers chosen on" in table


def test_compare_identical_models_gives_zero_rewards(tmp_path: Path):
    data = _data(tmp_path, [_row(1, None, "yes", "no")])
    result = run_compare("tiny:causal_lm", "tiny:causal_lm", data=str(data), out=tmp_path / "c.html",
                         settings=SETTINGS, device="cpu", stdout=io.StringIO())
    row = result.rows[0]
    assert row.base_answer == row.tuned_answer  # same seed and settings -> same answer
    for key in ("chosen", "rejected", "base_answer", "tuned_answer"):
        assert row.reward(key, result.beta) == 0.0
    assert row.reward_prefers("chosen", "rejected", result.beta) == "tie"


def test_compare_html_page_with_images_and_dataset_answers(tmp_path: Path, idefics3_adapter: Path):
    write_image(tmp_path / "a.png", 1)
    write_image(tmp_path / "b.png", 2)
    rows = [_row(1, "a.png", "a red <b>square</b>", "a blue circle"), _row(2, "b.png", "left", "right"),
            {"id": "bad", "prompt": "x"}]
    data = _data(tmp_path, rows)
    out = io.StringIO()
    html_path = tmp_path / "report" / "compare.html"
    result = run_compare("tiny:idefics3", str(idefics3_adapter), data=str(data), out=html_path, settings=SETTINGS,
                         device="cpu", stdout=out, limit=5)
    assert [r.id for r in result.rows] == ["r1", "r2"]
    assert "skipped 1" in out.getvalue() and "prefs.jsonl:3" in out.getvalue()  # never dropped silently
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "a red &lt;b&gt;square&lt;/b&gt;" in page and "a blue circle" in page
    assert "dataset chosen" in page and "dataset rejected" in page
    assert "preferred by the reward" in page or "tie" not in page
    for r in result.rows:
        assert f"reward {r.reward('tuned_answer', result.beta):+.3f}" in page


def test_compare_single_image_and_prompt(tmp_path: Path, idefics3_adapter: Path, image_path: Path):
    html_path = tmp_path / "one.html"
    result = run_compare("tiny:idefics3", str(idefics3_adapter), image=[str(image_path)], prompt="what is it?",
                         out=html_path, settings=SETTINGS, device="cpu", stdout=io.StringIO())
    (row,) = result.rows
    assert row.chosen is None and row.reward("chosen", result.beta) is None
    assert row.reward("tuned_answer", result.beta) is not None
    page = html_path.read_text()
    assert "dataset chosen" not in page and "what is it?" in page and "data:image/png;base64," in page
    assert result.reward_accuracy() is None


def test_compare_needs_inputs(tmp_path: Path):
    with pytest.raises(ValueError, match="--data FILE, or --prompt"):
        run_compare("tiny:causal_lm", "tiny:causal_lm", out=tmp_path / "x.html", stdout=io.StringIO(),
                    model_loader=lambda *a, **k: None)


def test_reward_arithmetic_by_hand():
    from vlmdpo.compare import CompareResult, CompareRow

    row = CompareRow("x", [], [], "b", "t", "c", "r",
                     base_logps={"chosen": -10.0, "rejected": -12.0, "base_answer": -3.0, "tuned_answer": -9.0},
                     tuned_logps={"chosen": -8.0, "rejected": -13.0, "base_answer": -4.0, "tuned_answer": -5.0})
    assert row.reward("chosen", 0.1) == pytest.approx(0.2)  # 0.1 * (-8 - -10)
    assert row.reward("rejected", 0.1) == pytest.approx(-0.1)
    assert row.reward("base_answer", 0.5) == pytest.approx(-0.5)
    assert row.reward("tuned_answer", 0.5) == pytest.approx(2.0)
    assert row.reward_prefers("chosen", "rejected", 0.1) == "chosen"
    assert row.reward_prefers("tuned_answer", "base_answer", 0.5) == "tuned_answer"
    assert row.base_prefers_chosen() is True
    missing = CompareRow("y", [], [], "b", "t", "c", "r", base_logps={"chosen": -1.0}, tuned_logps={"chosen": -2.0})
    assert missing.reward("rejected", 0.1) is None and missing.reward_prefers("chosen", "rejected", 0.1) is None
    result = CompareResult([row, missing], 0.1, "m1", "m2", SETTINGS)
    assert result.reward_accuracy() == 1.0  # the unscored row does not count either way


def test_candidates_are_paired_as_distinct_texts():
    from vlmdpo.compare import _pairs_of_distinct

    assert _pairs_of_distinct(["a", "b", "a", "c"]) == [("a", "b"), ("c", "a")]
    assert _pairs_of_distinct(["same", "same"]) == [("same", "same .")]
    assert _pairs_of_distinct(["", ""]) == [("", ".")]
    assert _pairs_of_distinct(["a", "b"]) == [("a", "b")]
