"""The Data page in Chromium: upload a file, check it, and open a problem's row by clicking it."""
from __future__ import annotations

import json

ROW = {"prompt": [{"role": "user", "content": "What is 2 plus 2?"}],
       "chosen": [{"role": "assistant", "content": "4."}], "rejected": [{"role": "assistant", "content": "5."}]}


def test_upload_check_and_open_a_problem_row(live_studio, page, tmp_path):
    data = tmp_path / "upload.jsonl"
    data.write_text(json.dumps(ROW) + "\n" + json.dumps({**ROW, "rejected": ROW["chosen"]}) + "\n")
    page.goto(live_studio.url + "/data")
    page.set_input_files("#upload input[name=files]", str(data))
    page.fill("#upload input[name=name]", "mine")
    page.click("#upload-btn")
    page.wait_for_selector("#check-summary.error")  # the upload is checked at once
    assert page.input_value("#pick input[name=path]").endswith("uploads/mine/upload.jsonl")
    assert "kept 1, skipped 1" in page.inner_text("#check-summary")
    page.click("table.problems tr.clickable")
    page.wait_for_selector(".row-focus pre.raw")
    focus = page.inner_text(".row-focus")
    assert "upload.jsonl:2" in focus and '"rejected"' in page.inner_text(".row-focus pre.raw")

    page.set_input_files("#upload input[name=files]", str(data))
    page.click("#upload-btn")  # the same name again: the error shows at the name field
    page.wait_for_selector("#upload .field-error.error")
    assert "exists" in page.inner_text("#upload .field-error.error")
