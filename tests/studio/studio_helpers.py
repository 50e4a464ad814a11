"""Helpers for the studio tests: small demo data, the runs' metrics, stopping every process a test started,
and the files the lab, label and deploy tests start from (a run in the runs table, a candidates file)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import vlmdpo

from vlmdpo.studio import processes, runs, servers
from vlmdpo.studio.home import StudioHome

IMAGES = Path(vlmdpo.__file__).parent / "samples" / "trl" / "images"


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


def stop_all(home: StudioHome) -> None:
    """Kill what a test left running (each run's watcher session, each server), so nothing outlives the test."""
    for row in servers.servers(home, "lab") + servers.servers(home, "deploy"):
        processes.stop(row["pid"])
    for run in runs.list_runs(home):
        if run["status"] in runs.LIVE and run["pid"]:
            try:
                os.killpg(run["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
            child = processes._children.get(run["pid"])
            if child is not None:
                child.wait(timeout=30)


def fake_run(home: StudioHome, name: str, metrics: list[dict], *, status: str = "finished", log: str = "",
             pid: int | None = None) -> dict:
    """A runs-table row whose files are written here (no process), for the monitor's reading of them."""
    folder = home.root / "runs" / name
    out = folder / "output"
    out.mkdir(parents=True)
    (folder / runs.CONFIG).write_text("model_name_or_path: tiny:idefics3\n")
    (folder / runs.LOG).write_text(log)
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    now = time.time()
    with home.db() as con:
        cur = con.execute("INSERT INTO runs(name, output_dir, config_path, pid, status, created, updated) "
                          "VALUES(?, ?, ?, ?, ?, ?, ?)",
                          (name, str(out), str(folder / runs.CONFIG), pid, status, now, now))
    return runs._row(home, cur.lastrowid)  # as written: get_run would already settle a live status


def overfit_metrics(steps: int = 10, turn: int = 4) -> list[dict]:
    """Training loss falling throughout; eval loss falling until step `turn`, then rising."""
    rows = []
    for s in range(1, steps + 1):
        rows.append({"step": s, "loss": 0.7 - 0.05 * s, "rewards/accuracies": 0.5 + 0.04 * s,
                     "rewards/margins": 0.01 * s, "learning_rate": 1e-4})
        if s % 2 == 0:
            rows.append({"step": s, "eval_loss": 0.6 - 0.02 * min(s, turn) + 0.03 * max(0, s - turn),
                         "eval_rewards/accuracies": 0.6, "eval_rewards/margins": 0.02})
    return rows


def text_prefs(path: Path, n: int = 8) -> Path:
    """Text-only pairs: the quickest data for a real tiny:causal_lm run."""
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
             "chosen": [{"role": "assistant", "content": f"It is {2 * i}."}],
             "rejected": [{"role": "assistant", "content": f"Maybe {2 * i + 1}."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_form(data: Path, name: str, **values: str) -> dict:
    """The Train page's request for a tiny:causal_lm run on `data`."""
    return {"run_name": name, "values": {"model_name_or_path": "tiny:causal_lm", "dataset": str(data),
                                         "lora_rank": "4", "max_length": "128", "save_steps": "1000", **values}}


def add_run(home: StudioHome, tiny_run: Path, folder: Path, name: str = "tiny-run") -> Path:
    """A copy of the session's tiny run inside the home's roots, listed as a finished run."""
    run = Path(shutil.copytree(tiny_run, folder))
    now = time.time()
    with home.db() as con:
        con.execute("INSERT INTO runs(name, output_dir, config_path, status, created, updated) "
                    "VALUES(?, ?, ?, 'finished', ?, ?)", (name, str(run), str(run / "vlmdpo_config.yaml"), now, now))
    return run


def prompt(text: str = "What shape is this?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def write_candidates(path: Path, rows: int = 3, answers: int = 3, **changes) -> Path:
    """`rows` candidate rows as `vlmdpo sample` writes them; `changes` maps a row index to fields to replace."""
    shutil.copy(IMAGES / "red_square.png", path.parent / "red.png")  # inside the studio's roots
    out = []
    for i in range(rows):
        row = {"id": f"q{i}", "prompt": prompt(f"Question {i}?"), "images": ["red.png"],  # beside the file
               "candidates": [f"answer {i}.{k}" for k in range(answers)]}
        row.update(changes.get(f"row{i}", {}))
        out.append(json.dumps(row))
    path.write_text("\n".join(out) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def data_check_ok(path: Path) -> bool:
    """What `vlmdpo data check PATH` decides (the library function it calls)."""
    from vlmdpo.data.stats import check_data

    report = check_data(str(path))
    assert report.ok, [str(e) for e in report.errors]
    return report.n_kept
