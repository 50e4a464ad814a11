"""Training runs the studio started: launch, stop, resume and status, recorded in the `runs` table.

Each run is `python -m vlmdpo.studio.runs RUN_DIR -- train CONFIG [key=value]` in a new session: a small
watcher that runs the real `vlmdpo train` as its child, forwards Ctrl-C (SIGINT) to it, and records the
exit in the database and in RUN_DIR/exit_code. So a run survives the browser and the studio, and a
restarted studio learns how a run ended even when it was not there to see it.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vlmdpo.atomic import write_text
from vlmdpo.studio import processes
from vlmdpo.studio.errors import StudioError
from vlmdpo.studio.home import StudioHome

LIVE = ("starting", "running", "stopping")
LOG, EXIT_CODE, CONFIG = "train.log", "exit_code", "config.yaml"
EXIT_STOPPED = (130, 143)  # train/interrupt.py: SIGINT / SIGTERM, checkpoint saved
TAIL_LINES = 30


def slug(name: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.")[:60]
    if not text:
        raise StudioError("the run needs a name", "type a name of letters, digits, - or _", field="run_name")
    return text


def log_tail(run_dir: Path, lines: int = TAIL_LINES) -> str:
    return processes.log_tail(run_dir / LOG, lines)


def ended_status(code: int | None) -> str:
    if code == 0:
        return "finished"
    return "stopped" if code in EXIT_STOPPED else "failed"


def _row(home: StudioHome, run_id: int) -> dict[str, Any]:
    with home.db() as con:
        row = con.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise StudioError(f"no run {run_id}", "pick a run from the list", field="run", status=404)
    return dict(row)


def _update(home: StudioHome, run_id: int, **values: Any) -> None:
    sets = ", ".join(f"{k} = ?" for k in values)
    with home.db() as con:
        con.execute(f"UPDATE runs SET {sets}, updated = ? WHERE id = ?", (*values.values(), time.time(), run_id))


def run_dir(home: StudioHome, row: dict[str, Any]) -> Path:
    return Path(row["config_path"]).parent


def refresh(home: StudioHome, row: dict[str, Any]) -> dict[str, Any]:
    """The row with its status made true: a live status whose process is gone becomes how it ended."""
    folder = run_dir(home, row)
    if row["status"] in LIVE and not processes.alive(row["pid"], str(folder).encode()):  # a reused pid: not our run
        try:
            code: int | None = int((folder / EXIT_CODE).read_text().strip())
        except (OSError, ValueError):
            code = None
        status = ended_status(code)
        message = None if status != "failed" else (
            f"exit code {code}" if code is not None else "the run's process ended without recording how (killed?)")
        _update(home, row["id"], status=status, message=_with_tail(message, folder))
        row = _row(home, row["id"])
    elif row["status"] == "starting":
        _update(home, row["id"], status="running")
        row = _row(home, row["id"])
    return row


def _with_tail(message: str | None, folder: Path) -> str | None:
    if message is None:
        return None
    tail = log_tail(folder, 12)
    return f"{message}\n{tail}" if tail else message


def list_runs(home: StudioHome) -> list[dict[str, Any]]:
    with home.db() as con:
        rows = [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY id DESC")]
    return [refresh(home, r) for r in rows]


def get_run(home: StudioHome, run_id: int) -> dict[str, Any]:
    return refresh(home, _row(home, run_id))


def launch(home: StudioHome, name: str, config_yaml: str, output_dir: Path) -> dict[str, Any]:
    """Write RUN_DIR/config.yaml and start the watcher; the new row (status starting)."""
    name = slug(name)
    folder = home.root / "runs" / name
    with home.db() as con:
        taken = con.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone()
    if taken or folder.exists():
        raise StudioError(f"a run named '{name}' exists", "choose another name, or resume that run from the monitor",
                          field="run_name", status=409)
    folder.mkdir(parents=True)
    config = write_text(folder / CONFIG, config_yaml)
    now = time.time()
    with home.db() as con:
        cur = con.execute("INSERT INTO runs(name, output_dir, config_path, status, created, updated) "
                          "VALUES(?, ?, ?, 'starting', ?, ?)", (name, str(output_dir), str(config), now, now))
        run_id = cur.lastrowid
    _start(home, run_id, folder, [])
    return _row(home, run_id)


def _start(home: StudioHome, run_id: int, folder: Path, overrides: list[str]) -> None:
    (folder / EXIT_CODE).unlink(missing_ok=True)
    args = [str(folder), str(home.db_path), str(run_id), "--", "train", str(folder / CONFIG), *overrides]
    try:
        proc = processes.launch(args, folder / LOG, module="vlmdpo.studio.runs", cwd=folder)
    except OSError as e:
        _update(home, run_id, pid=None, status="failed", message=f"could not start {sys.executable}: {e}")
        raise StudioError(f"could not start the run: {e}", "check the studio's Python and the run folder's disk",
                          field="run", status=500) from None
    _update(home, run_id, pid=proc.pid, status="starting", message=None)


def stop(home: StudioHome, run_id: int) -> dict[str, Any]:
    """SIGINT: the trainer finishes its step, saves a checkpoint and exits 130 (train/interrupt.py)."""
    row = get_run(home, run_id)
    if row["status"] not in LIVE:
        raise StudioError(f"run '{row['name']}' is not running ({row['status']})", "nothing to stop", field="run",
                          status=409)
    os.kill(row["pid"], signal.SIGINT)
    _update(home, run_id, status="stopping")
    return _row(home, run_id)


def resume(home: StudioHome, run_id: int) -> dict[str, Any]:
    """Start the run again from its newest checkpoint (`resume_from_checkpoint=auto`, as on the command line)."""
    row = get_run(home, run_id)
    if row["status"] in LIVE:
        raise StudioError(f"run '{row['name']}' is still {row['status']}", "stop it first", field="run", status=409)
    out = Path(row["output_dir"])
    if not any(out.glob("checkpoint-*")):
        raise StudioError(f"run '{row['name']}' has no checkpoint to resume from in {out}",
                          "start a new run (a checkpoint is saved every save_steps and on Stop)", field="run",
                          status=409)
    _start(home, run_id, run_dir(home, row), ["resume_from_checkpoint=auto"])
    return _row(home, run_id)


def set_chosen_model(home: StudioHome, run_id: int, model_path: str) -> dict[str, Any]:
    """The model of this run the lab and export use (a checkpoint folder, or the final model)."""
    row = get_run(home, run_id)
    path = home.confine(model_path, field="model", must_exist=True)
    out = Path(row["output_dir"]).resolve()
    if path != out and out not in path.parents:
        raise StudioError(f"{model_path} is not a model of run '{row['name']}'", f"pick a folder under {out}",
                          field="model")
    home.set_setting(f"run_model:{run_id}", str(path))
    home.set_setting("run_model", json.dumps({"run": run_id, "path": str(path)}))
    return {"run": run_id, "path": str(path)}


# ----------------------------------------------------------------------------------- the watcher
def _watch(folder: Path, db_path: Path, run_id: int, cli_args: list[str]) -> int:
    child = subprocess.Popen([sys.executable, "-m", "vlmdpo", *cli_args], stdin=subprocess.DEVNULL)

    def forward(signum, _frame):
        child.send_signal(signum)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, forward)
    code = child.wait()
    write_text(folder / EXIT_CODE, str(code))
    home = StudioHome(db_path.parent)
    status = ended_status(code)
    _update(home, run_id, status=status, message=_with_tail(f"exit code {code}" if status == "failed" else None,
                                                            folder))
    return code


if __name__ == "__main__":
    folder_arg, db_arg, id_arg, sep, *rest = sys.argv[1:]
    sys.exit(_watch(Path(folder_arg), Path(db_arg), int(id_arg), rest))
