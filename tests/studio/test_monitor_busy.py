"""The monitor stays usable while training saturates the CPU: the server does no training work itself,
so under busy-loop processes on every core the page still loads and new metrics still arrive.
A liveness check with generous bounds, not a timing benchmark."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from studio_helpers import fake_run, overfit_metrics

BOUND_MS = 60_000


def test_monitor_page_live_under_cpu_saturation(live_studio, page):
    run = fake_run(live_studio.home, "busy", overfit_metrics(steps=4))
    metrics = live_studio.home.root / "runs" / "busy" / "output" / "metrics.jsonl"
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        page.goto(f"{live_studio.url}/monitor?runs={run['id']}", timeout=BOUND_MS)
        page.wait_for_function("Number(document.querySelector('#charts').dataset.points || 0) > 0", timeout=BOUND_MS)
        before = int(page.get_attribute("#charts", "data-points"))
        with open(metrics, "a") as f:
            f.write(json.dumps({"step": 5, "loss": 0.4, "learning_rate": 1e-4}) + "\n")
        page.wait_for_function(f"Number(document.querySelector('#charts').dataset.points) > {before}",
                               timeout=BOUND_MS)
        page.wait_for_selector("#reading li", timeout=BOUND_MS)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
