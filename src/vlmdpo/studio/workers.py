"""The processes the studio starts for the lab and deploy pages: `python -m vlmdpo serve|export|judge ...`.

Each is its own session (start_new_session), so it outlives a closed browser; its output goes to a log
file whose tail becomes the error when it fails. Servers are rows of the `servers` table (pid, port,
status), so a restarted studio finds its endpoints again; `alive` guards against a reused pid.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vlmdpo.studio.errors import StudioError
from vlmdpo.studio.home import StudioHome

_children: dict[int, subprocess.Popen] = {}  # started by this process: poll() reaps them (no zombies)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_port(port: Any, field: str = "port") -> int:
    """A port the browser chose: a number in range that nothing listens on yet."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port < 65536:
        raise StudioError(f"port {port!r}: not a port number", "enter 1024-65535, or leave it empty for a free one",
                          field=field)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise StudioError(f"port {port} is in use", "choose another port, or leave it empty for a free one",
                              field=field, status=409) from None
    return port


def launch(args: list[str], log_path: Path) -> subprocess.Popen:
    """`python -m vlmdpo ARGS` in its own session, stdout and stderr into `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "vlmdpo", *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    _children[proc.pid] = proc
    return proc


def exit_code(pid: int | None) -> int | None:
    """The exit status of a child this process started and that has ended; None otherwise."""
    proc = _children.get(pid) if pid else None
    return proc.poll() if proc is not None else None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:  # started by an earlier studio: alive, not a zombie, and still a vlmdpo process (not a reused pid)
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and b"vlmdpo" in cmdline


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
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines() if line.strip()]  # a progress bar's last state
    return "\n".join(kept[-lines:])


def failure(what: str, log_path: str | Path, fix: str, *, field: str | None = None) -> StudioError:
    tail = log_tail(log_path)
    return StudioError(f"{what}; the end of its log ({log_path}):\n{tail or '(empty)'}", fix, field=field, status=502)


# ------------------------------------------------------------------------------------- servers
def serve_args(models: list[tuple[str, str]], port: int) -> list[str]:
    args = ["serve", "--port", str(port), "--max-concurrency", "2"]
    for name, source in models:
        args += ["--model", f"{name}={source}"]
    return args


def start_server(home: StudioHome, kind: str, models: list[tuple[str, str]], port: int | None = None) -> dict:
    """A `vlmdpo serve` process for `models`, recorded as `starting`; `refresh` sees it become running."""
    port = port or free_port()
    now = time.time()
    with home.db() as con:
        sid = con.execute("INSERT INTO servers(kind, models, port, status, log_path, created, updated) "
                          "VALUES(?, ?, ?, 'starting', '', ?, ?)", (kind, json.dumps(models), port, now, now)).lastrowid
    log_path = home.root / "logs" / f"serve-{sid}.log"
    proc = launch(serve_args(models, port), log_path)
    with home.db() as con:
        con.execute("UPDATE servers SET pid = ?, log_path = ? WHERE id = ?", (proc.pid, str(log_path), sid))
    return server(home, sid)


def _healthy(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def refresh(home: StudioHome, row: dict) -> dict:
    """The row with its status brought up to date: starting -> running when /health answers; a process that
    is gone -> failed (with its log tail) unless it was stopped on purpose."""
    status, message = row["status"], row["message"]
    if status in ("starting", "running"):
        if not alive(row["pid"]):
            status, message = "failed", "the server exited:\n" + log_tail(row["log_path"])
        elif status == "starting" and _healthy(row["port"]):
            status = "running"
    if (status, message) != (row["status"], row["message"]):
        with home.db() as con:
            con.execute("UPDATE servers SET status = ?, message = ?, updated = ? WHERE id = ?",
                        (status, message, time.time(), row["id"]))
        row = {**row, "status": status, "message": message}
    return row


def _row(r: Any) -> dict:
    row = dict(r)
    row["models"] = [tuple(m) for m in json.loads(row["models"])]
    return row


def server(home: StudioHome, sid: int) -> dict:
    with home.db() as con:
        r = con.execute("SELECT * FROM servers WHERE id = ?", (sid,)).fetchone()
    if r is None:
        raise StudioError(f"server {sid}: no such server", "reload the page", field="id", status=404)
    return refresh(home, _row(r))


def servers(home: StudioHome, kind: str) -> list[dict]:
    with home.db() as con:
        rows = con.execute("SELECT * FROM servers WHERE kind = ? ORDER BY id DESC", (kind,)).fetchall()
    return [refresh(home, _row(r)) for r in rows]


def stop_server(home: StudioHome, sid: int) -> dict:
    row = server(home, sid)
    stop(row["pid"])
    if row["status"] in ("starting", "running"):
        with home.db() as con:
            con.execute("UPDATE servers SET status = 'stopped', updated = ? WHERE id = ?", (time.time(), sid))
    return server(home, sid)


async def wait_running(home: StudioHome, sid: int, timeout: float = 300.0) -> dict:
    """Poll until the server answers /health; its failure (with the log tail) is a StudioError."""
    import asyncio

    from starlette.concurrency import run_in_threadpool

    deadline = time.monotonic() + timeout
    while True:
        row = await run_in_threadpool(server, home, sid)
        if row["status"] == "running":
            return row
        if row["status"] != "starting":
            raise failure(f"`vlmdpo serve` for {', '.join(s for _, s in row['models'])} did not start",
                          row["log_path"], "check the model names and folders; the log says what failed",
                          field="model")
        if time.monotonic() > deadline:
            await run_in_threadpool(stop_server, home, sid)
            raise failure(f"`vlmdpo serve` did not answer within {timeout:.0f} s", row["log_path"],
                          "a large model may need longer on this machine; try a smaller one", field="model")
        await asyncio.sleep(0.3)


# ------------------------------------------------------------------------------- model choices
HUB_ID = r"[A-Za-z0-9][\w.-]*/[\w.-]+"


def model_source(home: StudioHome, value: Any, field: str) -> str:
    """What the browser named as a model -> what `--model` gets: a `tiny:`/`builtin:` name, a folder inside
    the allowed roots (resolved), or a hub id (owner/name) that is not a local path."""
    import re

    text = str(value or "").strip()
    if not text:
        raise StudioError("no model given", "pick a run, or enter a model folder or name (e.g. tiny:idefics3)",
                          field=field)
    if text.startswith(("tiny:", "builtin:")):
        return text
    path = home.confine(text, field=field)
    if path.exists():
        return str(path)
    if re.fullmatch(HUB_ID, text) and not text.startswith("."):
        return text
    raise StudioError(f"{text}: no such model folder", "pick a run, enter a folder that exists, a hub id "
                      "(owner/name) or a tiny:/builtin: name", field=field, status=404)


def runs(home: StudioHome) -> list[dict]:
    """The Train page's runs (newest first) with the base each was trained from and its models (the final
    one and each checkpoint, the best marked; as `vlmdpo runs list` finds them)."""
    from vlmdpo.errors import FixableError
    from vlmdpo.inference.load import read_train_config
    from vlmdpo.runs import list_run

    with home.db() as con:
        rows = [dict(r) for r in con.execute("SELECT id, name, output_dir, status FROM runs ORDER BY id DESC")]
    for row in rows:
        folder = Path(row["output_dir"])
        config = read_train_config(folder)
        row["base"], row["beta"] = config.get("model_name_or_path"), config.get("beta")
        try:
            row["models"] = [{"name": m.name, "path": str(m.path), "step": m.step, "best": m.best}
                             for m in list_run(folder)]
        except FixableError:  # not started, or nothing saved yet
            row["models"] = []
    return rows
