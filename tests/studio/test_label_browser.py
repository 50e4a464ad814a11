"""The Label page in Chromium: three rows labelled with the keyboard (one pick undone and redone), the
progress shown, and the pairs file passing `vlmdpo data check`."""
from __future__ import annotations

from conftest import shot

from studio_helpers import data_check_ok, read_jsonl, write_candidates

from vlmdpo.engine.judge_labels import read_labels


def test_label_three_rows_with_keys_and_an_undo(live_studio, page, tmp_path):
    cands = write_candidates(tmp_path / "cands.jsonl", rows=3, answers=3)
    page.goto(live_studio.url + "/label")
    page.fill("input[name=candidates]", str(cands))
    page.fill("input[name=labeler]", "tester")
    page.click("#open-form button[type=submit]")
    progress = page.locator("#progress-text")
    progress.filter(has_text="0 of 3").wait_for()
    assert page.locator("#answers .answer").count() == 3

    page.keyboard.press("2")
    progress.filter(has_text="1 of 3").wait_for()
    page.keyboard.press("3")
    progress.filter(has_text="2 of 3").wait_for()
    page.keyboard.press("u")  # undo the pick for q1: it is back on screen
    progress.filter(has_text="1 of 3").wait_for()
    assert "Question 1?" in page.locator("#prompt").inner_text()
    page.keyboard.press("1")
    progress.filter(has_text="2 of 3").wait_for()
    page.keyboard.press("Shift+Digit3")  # the third answer is the worst, then the second the best (by mouse)
    assert "worst" in page.locator("#answers .answer").nth(2).get_attribute("class")
    shot(page, "label")
    page.locator("#answers .answer").nth(1).locator("button.pick").click()
    page.locator("#finished").filter(has_text="3 of 3").wait_for()

    decided = read_labels(tmp_path / "cands.labels.jsonl")
    assert {k: (v["best"], v["worst"]) for k, v in decided.items()} == {"q0": (1, None), "q1": (0, None), "q2": (1, 2)}
    assert len(read_jsonl(tmp_path / "cands.labels.jsonl")) == 3  # the undone row is gone, not overridden
    pairs = read_jsonl(tmp_path / "cands.pairs.jsonl")
    assert len(pairs) == 6 and data_check_ok(tmp_path / "cands.pairs.jsonl") == 6
