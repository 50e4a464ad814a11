"""End to end in Chromium: demo data checked on the Data page, a tiny run started from the Train page and
found running by a restarted studio, its charts gaining points on the Monitor page while it trains, then
stopped (exit 130, a checkpoint saved) and resumed past the step it stopped at."""
from __future__ import annotations

import re
from pathlib import Path

from conftest import shot
from fastapi.testclient import TestClient
from studio_helpers import demo_data, metrics_rows, stop_all

from vlmdpo.studio import processes, runs
from vlmdpo.studio.app import create_app
from vlmdpo.studio.home import StudioHome

TIMEOUT_MS = 120_000


def test_data_train_monitor_stop_resume(live_studio, page, tmp_path):
    demo = demo_data(tmp_path)
    try:
        _data_page(live_studio, page, demo)
        _train_page(live_studio, page, demo)
        _monitor_stop_resume(live_studio, page)
    finally:
        stop_all(live_studio.home)


def _data_page(live, page, demo):
    page.goto(live.url + "/data")
    page.fill("#pick input[name=path]", str(demo / "train.jsonl"))
    page.click("#check")
    page.wait_for_selector("#check-summary.ok")
    assert "kept 12" in page.inner_text("#check-summary")
    page.wait_for_selector(".pair img")
    page.wait_for_function("document.querySelector('.pair img').naturalWidth > 0")
    assert page.locator(".pair .side.chosen").count() >= 1
    page.fill("#stats-form input[name=model]", "tiny:idefics3")
    page.click("#stats-btn")
    page.wait_for_selector("#hists .chart canvas", timeout=TIMEOUT_MS)
    assert "image tokens per row" in page.inner_text("#hists")
    shot(page, "data")


def _train_page(live, page, demo):
    page.goto(live.url + "/train")
    page.fill("input[name=run_name]", "e2e")
    page.fill("input[name=model_name_or_path]", "tiny:idefics3")
    page.fill("input[name=dataset]", str(demo / "train.jsonl"))
    page.fill("input[name=max_steps]", "oops")
    page.click("#validate")
    page.wait_for_selector("label.invalid input[name=max_steps]")
    assert "integer" in page.inner_text("label.invalid .field-error")
    # far more steps than the test waits for, so Stop always lands mid-run (the test kills the run at its end)
    for key, value in (("max_steps", "40"), ("eval_dataset", str(demo / "val.jsonl")), ("eval_steps", "2"),
                       ("save_steps", "50"), ("per_device_train_batch_size", "2"), ("lora_rank", "4"),
                       ("max_length", "512")):
        page.fill(f"input[name={key}]", value)
    page.click("#validate")
    page.wait_for_function("document.querySelector('#yaml').textContent.includes('max_steps: 40')")
    assert page.get_attribute("#download", "hidden") is None
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "train")
    page.click("#start")
    page.wait_for_selector("#errors.ok a")
    page.wait_for_selector("#runs tr[data-run] .status.running, #runs tr[data-run] .status.starting")
    _a_restarted_studio_finds_it_running(live)


def _a_restarted_studio_finds_it_running(live):
    """A new app on the same home, in a process that did not start the run (its children unknown to it)."""
    started = dict(processes._children)
    processes._children.clear()
    try:
        restarted = TestClient(create_app(StudioHome(live.home.root, extra_roots=live.home.extra_roots)))
        found = restarted.get("/api/train/runs").json()["runs"]
        assert [(r["name"], r["status"]) for r in found] == [("e2e", "running")]
    finally:
        processes._children.update(started)


def _points(page) -> int:
    return int(page.get_attribute("#charts", "data-points") or 0)


def _monitor_stop_resume(live, page):
    page.click("#errors.ok a")
    page.wait_for_url(re.compile(r"/monitor\?runs=\d+"))
    page.wait_for_function("Number(document.querySelector('#charts').dataset.points || 0) > 0", timeout=TIMEOUT_MS)
    first = _points(page)
    page.wait_for_function(f"Number(document.querySelector('#charts').dataset.points || 0) > {first}",
                           timeout=TIMEOUT_MS)  # pushed while it runs, no reload
    page.wait_for_selector(".run-progress .status.running")
    page.wait_for_function("document.querySelector('#log').textContent.includes('training:')")
    page.wait_for_function("document.querySelector('#log').textContent.includes('step 4: eval_loss')",
                           timeout=TIMEOUT_MS)  # two evaluations: the screenshot shows curves, not dots
    page.wait_for_function("document.querySelector('#reading').textContent.includes('Evaluation loss')",
                           timeout=TIMEOUT_MS)
    shot(page, "monitor")

    page.goto(live.url + "/train")
    page.click("#runs button.stop")
    page.wait_for_selector("#runs .status.stopped", timeout=TIMEOUT_MS)
    run = runs.list_runs(live.home)[0]
    assert (runs.run_dir(live.home, run) / runs.EXIT_CODE).read_text() == "130"  # SIGINT: saved, then exited
    assert list(Path(run["output_dir"]).glob("checkpoint-*")), "the stop saved a checkpoint"
    stopped = _max_step(live)
    page.click("#runs button.resume")
    page.wait_for_selector("#runs .status.running, #runs .status.starting")
    page.goto(live.url + "/monitor")
    page.wait_for_function(f"Number(document.querySelector('#charts').dataset.points || 0) > 0")
    _wait_step_beyond(live, stopped)


def _max_step(live) -> int:
    return max(r["step"] for r in metrics_rows(live.home))


def _wait_step_beyond(live, step: int) -> None:
    import time

    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        if any(r["step"] > step for r in metrics_rows(live.home)):
            return
        time.sleep(0.5)
    raise AssertionError(f"the resumed run logged no step after {step}")
