"""The `vlmdpo serve` processes behind the lab and deploy pages, and the models those pages offer.

Servers are rows of the `servers` table (pid, port, status), so a restarted studio finds its endpoints
again; processes.py starts and stops them.
"""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from vlmdpo.net import free_port
from vlmdpo.studio import processes
from vlmdpo.studio.errors import StudioError
from vlmdpo.studio.home import StudioHome


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
    proc = processes.launch(serve_args(models, port), log_path)
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
        if not processes.alive(row["pid"]):
            status, message = "failed", "the server exited:\n" + processes.log_tail(row["log_path"])
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
    processes.stop(row["pid"])
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
            raise processes.failure(f"`vlmdpo serve` for {', '.join(s for _, s in row['models'])} did not start",
                          row["log_path"], "check the model names and folders; the log says what failed",
                          field="model")
        if time.monotonic() > deadline:
            await run_in_threadpool(stop_server, home, sid)
            raise processes.failure(f"`vlmdpo serve` did not answer within {timeout:.0f} s", row["log_path"],
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
