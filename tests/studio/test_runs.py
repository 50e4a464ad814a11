"""How a restarted studio learns what became of a run it did not see end: the watcher's exit code file, or
none; a pid now used by another program is not the run. (A real run found running by a restarted studio,
stopped with a checkpoint and resumed: test_e2e_train.py.)"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from studio_helpers import fake_run

from vlmdpo.studio import runs


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
