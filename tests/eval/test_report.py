from __future__ import annotations

import json
import math

from PIL import Image

from vlmdpo.eval import report as rp

MODELS = {
    "base": {"preference": {"reward_accuracy": 0.5, "reward_margin": 0.0, "logp_accuracy": 0.52, "logp_margin": 0.01},
             "grounded": {"accuracy": 0.25, "n": 4, "by_kind": {"color": {"n": 2, "accuracy": 0.5},
                                                                 "count": {"n": 2, "accuracy": 0.0}}}},
    "tuned": {"preference": {"reward_accuracy": 0.95, "reward_margin": 1.5, "logp_accuracy": 0.9, "logp_margin": 2.0},
              "grounded": {"accuracy": 0.75, "n": 4, "by_kind": {"color": {"n": 2, "accuracy": 1.0},
                                                                  "count": {"n": 2, "accuracy": 0.5}}}},
}


def _metrics_jsonl(path):
    rows = []
    for step in range(1, 11):
        rows.append({"step": step, "epoch": step / 10, "loss": 0.69 - 0.05 * step, "rewards/accuracies": 0.5 + 0.04 * step,
                     "rewards/margins": 0.1 * step})
        if step % 5 == 0:
            rows.append({"step": step, "epoch": step / 10, "eval_loss": 0.7 - 0.04 * step,
                         "eval_rewards/accuracies": 0.5 + 0.03 * step, "eval_rewards/margins": 0.08 * step})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bar_values_in_percent_with_missing_as_nan():
    labels, heights = rp.bar_values({**MODELS, "other": {"preference": {"reward_accuracy": 0.6}}})
    assert labels == ["reward acc.", "prefers chosen", "grounded answers", "grounded: color", "grounded: count"]
    assert heights["tuned"] == [95.0, 90.0, 75.0, 100.0, 50.0]
    assert heights["other"][0] == 60.0 and all(math.isnan(v) for v in heights["other"][1:])


def test_summary_rows_format_percentages():
    rows = dict(rp.summary_rows(MODELS))
    assert rows["reward accuracy (implicit, vs base)"] == ["50.0%", "95.0%"]
    assert rows["reward margin (mean)"] == ["0.000", "1.500"]
    assert rows["grounded: count"] == ["0.0%", "50.0%"]


def test_write_report_makes_html_and_pngs(tmp_path):
    rows = _metrics_jsonl(tmp_path / "metrics.jsonl")
    img = tmp_path / "x.png"
    Image.new("RGB", (96, 96), (245, 245, 245)).save(img)
    examples = [
        rp.Example(image=img, question="What color is the circle?", truth="red", kind="color",
                   answers={"base": "The circle is blue.", "tuned": "The circle is red."},
                   correct={"base": False, "tuned": True}),
        rp.Example(image=Image.new("RGB", (50, 30), (0, 0, 255)), question="How many <b>?", truth=None,
                   answers={"base": "x" * 100, "tuned": "two"}, correct={"base": None, "tuned": None}),
    ]
    summary = {"models": MODELS, "settings": {"beta": 0.1, "test pairs": 4},
               "targets": [{"name": "tuned reward accuracy", "value": "95%", "target": ">= 90%", "met": True}]}
    out = rp.write_report(tmp_path / "rep", summary=summary, metrics_rows=rows, examples=examples, title="demo")
    page = out.read_text()
    for name in (rp.BARS_PNG, rp.CURVES_PNG, rp.EXAMPLES_PNG):
        assert f'src="{name}"' in page
        with Image.open(tmp_path / "rep" / name) as im:  # a real, decodable PNG
            assert im.format == "PNG" and im.size[0] > 200
    assert "95.0%" in page and "The circle is red." in page and "met" in page
    assert "How many &lt;b&gt;?" in page  # user text is escaped
    assert "<b>?" not in page


def test_report_without_training_rows_or_examples(tmp_path):
    out = rp.write_report(tmp_path, summary={"models": MODELS})
    assert (tmp_path / rp.BARS_PNG).exists()
    assert not (tmp_path / rp.CURVES_PNG).exists() and not (tmp_path / rp.EXAMPLES_PNG).exists()
    assert "Training" not in out.read_text()
