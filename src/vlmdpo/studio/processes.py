"""The processes the studio starts (training watchers, `vlmdpo serve`, export, judge): launch, alive, stop, log tail.

Each is `python -m <module> ARGS` in its own session (start_new_session), so it outlives a closed browser and
a restarted studio; its output goes to a log file whose tail becomes the error when it fails. A pid recorded
by an earlier studio is checked against /proc, so a reused pid is never taken for the process.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vlmdpo.studio.errors import StudioError

_children: dict[int, subprocess.Popen] = {}  # started by this process: poll() reaps them (no zombies)


def python_path() -> str:
    """The folder this vlmdpo was imported from first, so a child runs the studio's own code (a child's working
    folder may be elsewhere, where a relative PYTHONPATH would point nowhere)."""
    import vlmdpo

    here = str(Path(vlmdpo.__file__).resolve().parents[1])
    rest = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join([here, *[p for p in rest if p != here]])


def launch(args: list[str], log_path: Path, *, module: str = "vlmdpo", cwd: Path | None = None) -> subprocess.Popen:
    """`python -m MODULE ARGS` in its own session, stdout and stderr appended to `log_path`; OSError if the
    interpreter cannot start."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": python_path()}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd, env=env, start_new_session=True)
    _children[proc.pid] = proc
    return proc


def exit_code(pid: int | None) -> int | None:
    """The exit status of a child this process started and that has ended; None otherwise."""
    proc = _children.get(pid) if pid else None
    return proc.poll() if proc is not None else None


def alive(pid: int | None, marker: bytes = b"vlmdpo") -> bool:
    """Whether `pid` still runs and is ours: a child of this process, or (started by an earlier studio) a live,
    non-zombie process whose command line contains `marker`."""
    if not pid:
        return False
    proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc (macOS): the signal check is all there is
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and marker in cmdline


def stop(pid: int | None, timeout: float = 15.0) -> None:
    """SIGTERM to the process group, SIGKILL after `timeout` seconds."""
    if not alive(pid):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.1)


def log_tail(path: str | Path, lines: int = 15) -> str:
    """The last `lines` non-blank lines of a log (its last 64 KB), a progress bar's redraws as their last state."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64_000))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def failure(what: str, log_path: str | Path, fix: str, *, field: str | None = None) -> StudioError:
    tail = log_tail(log_path)
    return StudioError(f"{what}; the end of its log ({log_path}):\n{tail or '(empty)'}", fix, field=field, status=502)
