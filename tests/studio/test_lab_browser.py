"""The Lab page in Chromium: tiny:idefics3 as the base, a tiny LoRA run as the tuned model; both answers
stream in from one `vlmdpo serve` worker, each gets its implicit reward, and "left better" appends a pair
that passes `vlmdpo data check`."""
from __future__ import annotations

import json
import shutil

import httpx
from conftest import shot

from studio_helpers import IMAGES, add_run, data_check_ok, read_jsonl

from vlmdpo.studio import processes, servers


def test_lab_side_by_side_rewards_and_a_verdict(live_studio, page, tmp_path, tiny_run):
    run = add_run(live_studio.home, tiny_run, tmp_path / "run")
    image = shutil.copy(IMAGES / "red_square.png", tmp_path / "red.png")
    dataset = tmp_path / "lab_pairs.jsonl"

    page.goto(live_studio.url + "/lab")
    page.select_option("select[name=run]", str(run))
    assert page.input_value("input[name=base]") == "tiny:idefics3"  # the run's own base
    page.set_input_files("input[name=upload]", str(image))
    page.locator("#images img").wait_for()
    page.fill("textarea[name=prompt]", "What shape is this?")
    page.fill("input[name=max_tokens]", "12")
    page.fill("input[name=dataset]", str(dataset))
    page.click("#generate")
    page.locator("#verdict-form button[data-choice=left]:enabled").wait_for(timeout=120_000)
    page.wait_for_function("() => [...document.querySelectorAll('.reward b')].every(b => /^-?\\d/.test(b.textContent))",
                           timeout=120_000)
    left, right = page.locator("#left .text").inner_text(), page.locator("#right .text").inner_text()
    assert left and right and left != right
    shot(page, "lab")

    page.click("#verdict-form button[data-choice=left]")
    page.locator("#verdict-status").filter(has_text="pair appended").wait_for()
    row = read_jsonl(dataset)[0]
    assert row["chosen"][0]["content"][0]["text"] == left and row["meta"]["right"] == str(run)
    assert data_check_ok(dataset) == 1

    # the same worker answers the next request, as a stream of several events per side
    worker = servers.servers(live_studio.home, "lab")[0]
    body = {"base": "tiny:idefics3", "tuned": str(run), "images": [row["images"][0]], "prompt": "Again?",
            "max_tokens": 6}
    with httpx.stream("POST", live_studio.url + "/api/lab/generate", json=body, timeout=120) as resp:
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    assert sum("text" in e and e["side"] == "left" for e in events) >= 2 and events[-1] == {"done": True}
    assert [r["id"] for r in servers.servers(live_studio.home, "lab")] == [worker["id"]]

    page.click("#stop-worker")
    page.locator("#worker-status").filter(has_text="worker stopped").wait_for()
    assert not processes.alive(worker["pid"])
