"""Helpers for the studio tests: small demo data, the runs' metrics, and stopping every run a test started."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from vlmdpo.studio import runs
from vlmdpo.studio.home import StudioHome


def demo_data(tmp_path: Path, n_train: int = 12) -> Path:
    from vlmdpo.demo_data import make_demo_data

    out = tmp_path / "demo"
    make_demo_data(out, n_train=n_train, n_val=4, n_test=4, image_size=48, progress=False)
    return out


def metrics_rows(home: StudioHome) -> list[dict]:
    rows = []
    for run in runs.list_runs(home):
        path = Path(run["output_dir"]) / "metrics.jsonl"
        if path.exists():
            rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def wait_status(home: StudioHome, run_id: int, statuses: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = runs.get_run(home, run_id)
        if row["status"] in statuses:
            return row
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} stayed {row['status']} (wanted {statuses}); log:\n"
                         f"{runs.log_tail(runs.run_dir(home, row))}")


def stop_all_runs(home: StudioHome) -> None:
    """Kill what a test left running (its watcher's whole session), so no trainer outlives the test."""
    for run in runs.list_runs(home):
        if run["status"] in runs.LIVE and run["pid"]:
            try:
                os.killpg(run["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
            child = runs._children.get(run["pid"])
            if child is not None:
                child.wait(timeout=30)
