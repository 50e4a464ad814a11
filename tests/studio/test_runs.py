"""Runs outlive the studio: a restarted studio finds a run still training, learns how an ended run
ended (exit code file, or none), and stops it with SIGINT so the trainer saves a checkpoint."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from studio_helpers import fake_run, metrics_rows, stop_all_runs, text_prefs, tiny_form, wait_status

from vlmdpo.studio import runs
from vlmdpo.studio.app import create_app
from vlmdpo.studio.home import StudioHome


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("code, status", [("0", "finished"), ("130", "stopped"), ("143", "stopped"),
                                          ("1", "failed"), (None, "failed")])
def test_a_live_row_whose_process_is_gone_becomes_how_it_ended(studio_home, code, status):
    run = fake_run(studio_home, "r", [], status="running", pid=_dead_pid(), log="boom: bad thing\n")
    if code is not None:
        (runs.run_dir(studio_home, run) / runs.EXIT_CODE).write_text(code)
    got = runs.get_run(studio_home, run["id"])
    assert got["status"] == status
    if status == "failed":
        assert "boom: bad thing" in got["message"]
        assert ("exit code 1" if code else "without recording") in got["message"]


def test_a_reused_pid_is_not_the_run(studio_home):
    run = fake_run(studio_home, "r", [], status="running", pid=os.getpid())  # alive, but not this run's watcher
    assert runs.get_run(studio_home, run["id"])["status"] == "failed"


def test_slug_and_tail(tmp_path):
    assert runs.slug(" my run/1 ") == "my-run-1"
    (tmp_path / runs.LOG).write_text("a\nstep 1\rstep 2\rstep 3\nb\n")
    assert runs.log_tail(tmp_path, 2) == "step 3\nb"


def test_a_run_survives_a_studio_restart_and_stops_with_a_checkpoint(studio_home, tmp_path):
    data = text_prefs(tmp_path / "p.jsonl")
    client = TestClient(create_app(studio_home))
    try:
        r = client.post("/api/train/start", json=tiny_form(data, "long", max_steps="2000", logging_steps="1"))
        assert r.status_code == 200, r.text
        run_id = r.json()["run"]["id"]
        wait_status(studio_home, run_id, ("running",))
        _wait_for(lambda: metrics_rows(studio_home), "a logged step")

        runs._children.clear()  # a new studio process: it did not start the run, it only finds it
        restarted = TestClient(create_app(StudioHome(studio_home.root, extra_roots=studio_home.extra_roots)))
        found = restarted.get("/api/train/runs").json()["runs"]
        assert [(x["id"], x["status"]) for x in found] == [(run_id, "running")]

        assert restarted.post(f"/api/train/runs/{run_id}/stop").json()["run"]["status"] == "stopping"
        ended = wait_status(studio_home, run_id, ("stopped", "failed", "finished"))
        folder = runs.run_dir(studio_home, ended)
        assert ended["status"] == "stopped", ended["message"]
        assert (folder / runs.EXIT_CODE).read_text() == "130"
        assert list((folder / "output").glob("checkpoint-*")), "SIGINT saves a checkpoint"
    finally:
        stop_all_runs(studio_home)


def _wait_for(check, what: str, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"no {what} within {timeout} s")
