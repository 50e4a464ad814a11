"""The Monitor page: each run's metrics.jsonl pushed to the page as it grows (server-sent events), its log
tail, progress and ETA, and a plain-words reading of the curves with the best checkpoint named.

The server only reads files the training processes write: new rows are found by byte offset, and a
line still being written (no newline yet) waits for the next poll.
"""
from __future__ import annotations

import asyncio
import json
import math
import re
import time
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel

from vlmdpo.studio import runs
from vlmdpo.studio.app import get_home
from vlmdpo.studio.errors import StudioError
from vlmdpo.studio.home import StudioHome
from vlmdpo.studio.page import render

router = APIRouter()
POLL_S = 0.5
STATUS_EVERY_S = 2.0
_TOTAL = re.compile(r"training: .*?(\d+) steps \(")
RISE = 0.01  # an eval loss this much (relative) above its best counts as rising


def read_new_rows(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines after byte `offset`, and the offset after the last one read."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except OSError:
        return [], offset
    end = chunk.rfind(b"\n") + 1  # a torn last line is read next time, whole
    rows = []
    for line in chunk[:end].splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # not a metrics row; metrics.jsonl is written one whole line at a time
        if isinstance(row, dict):
            rows.append(row)
    return rows, offset + end


def total_steps(log: str) -> int | None:
    """The planned optimizer steps, as the trainer prints them ('training: 6 pairs, 6 steps (3/epoch), ...')."""
    found = _TOTAL.findall(log)
    return int(found[-1]) if found else None


def _series(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def read_curves(rows: list[dict[str, Any]]) -> list[str]:
    """What the curves say, in plain words (a few short sentences)."""
    train, evals = _series(rows, "loss"), _series(rows, "eval_loss")
    if not train:
        return ["No training steps logged yet."]
    bad = next((s for s, v in train + evals if not math.isfinite(v)), None)
    if bad is not None:
        return [f"The loss is not a number at step {bad}: lower learning_rate or check the data, then resume."]
    out = []
    third = max(1, len(train) // 3)
    first, last = _mean([v for _, v in train[:third]]), _mean([v for _, v in train[-third:]])
    trend = "falling" if last < first * (1 - RISE) else "rising" if last > first * (1 + RISE) else "flat"
    out.append(f"Training loss is {trend} ({first:.4f} at the start, {last:.4f} lately, step {train[-1][0]}).")
    if not evals:
        out.append("No evaluation yet: set val_size or eval_dataset (and eval_steps) to read overfitting.")
    else:
        best_step, best = min(evals, key=lambda sv: sv[1])
        now_step, now = evals[-1]
        after = [v for s, v in train if s > best_step]
        if now > best * (1 + RISE) and after and _mean(after) < _mean([v for s, v in train if s <= best_step]):
            out.append(f"Overfitting since step {best_step}: evaluation loss rose from {best:.4f} to {now:.4f} "
                       "while training loss kept falling. Use the best checkpoint, or train fewer steps.")
        elif now > best * (1 + RISE):
            out.append(f"Evaluation loss is above its best ({best:.4f} at step {best_step}; now {now:.4f}).")
        elif now > best:
            out.append(f"Evaluation loss is close to its best ({best:.4f} at step {best_step}; now {now:.4f}).")
        else:
            out.append(f"Evaluation loss is at its best so far ({best:.4f} at step {best_step}).")
    acc = _series(rows, "eval_rewards/accuracies") or _series(rows, "rewards/accuracies")
    margin = _series(rows, "eval_rewards/margins") or _series(rows, "rewards/margins")
    if acc:
        where = "evaluation" if _series(rows, "eval_rewards/accuracies") else "training"
        out.append(f"Reward accuracy ({where}): {acc[-1][1]:.0%} of pairs rank chosen above rejected"
                   + (f"; mean margin {margin[-1][1]:+.4f}." if margin else "."))
    return out


def best_model(output_dir: Path) -> dict[str, Any] | None:
    """The run's best model (lowest eval loss) as `vlmdpo runs list` marks it."""
    from vlmdpo.errors import FixableError
    from vlmdpo.runs import list_run

    try:
        models = list_run(output_dir)
    except FixableError:
        return None
    best = next((m for m in models if m.best), None)
    if best is None:
        return None
    return {"name": best.name, "path": str(best.path), "step": best.step, "eval_loss": best.eval_loss}


def summary(home: StudioHome, row: dict[str, Any], rows: list[dict[str, Any]], rate: float | None) -> dict[str, Any]:
    """Status, log tail, progress, ETA, the reading of the curves and the best model of one run."""
    log = runs.log_tail(runs.run_dir(home, row), 400)
    total = total_steps(log)
    step = max((int(r["step"]) for r in rows if "step" in r), default=0)
    eta = (total - step) / rate if rate and total and row["status"] in runs.LIVE else None
    return {"run": row, "log": "\n".join(log.splitlines()[-runs.TAIL_LINES:]), "step": step, "total": total,
            "eta_s": eta, "reading": read_curves(rows), "best": best_model(Path(row["output_dir"])),
            "using": home.setting(f"run_model:{row['id']}")}


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n"


async def stream(request: Request, home: StudioHome, ids: list[int]) -> AsyncIterator[str]:
    """Every run's rows so far, then new rows as they are written; a status event every few seconds."""
    offsets = {i: 0 for i in ids}
    seen: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    first: dict[int, tuple[float, int]] = {}
    last_status = 0.0
    yield "retry: 2000\n\n"
    while not await request.is_disconnected():
        for run_id in ids:
            row = runs.get_run(home, run_id)
            new, offsets[run_id] = read_new_rows(Path(row["output_dir"]) / "metrics.jsonl", offsets[run_id])
            if new:
                seen[run_id].extend(new)
                yield _event("metrics", {"run": run_id, "rows": new})
        now = time.monotonic()
        if now - last_status >= STATUS_EVERY_S:
            last_status = now
            for run_id in ids:
                row, rows = runs.get_run(home, run_id), seen[run_id]
                step = max((int(r["step"]) for r in rows if "step" in r), default=0)
                t0, s0 = first.setdefault(run_id, (now, step))
                rate = (step - s0) / (now - t0) if step > s0 and now > t0 else None
                yield _event("status", summary(home, row, rows, rate))
        await asyncio.sleep(POLL_S)


class UseModel(BaseModel):
    model: str


@router.get("/api/monitor/stream")
async def api_stream(request: Request, run_ids: str = Query("", alias="runs"),
                     home: StudioHome = Depends(get_home)) -> StreamingResponse:
    ids = _ids(run_ids)
    for run_id in ids:
        runs.get_run(home, run_id)  # 404 for an unknown run, before the stream starts
    return StreamingResponse(stream(request, home, ids), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _ids(text: str) -> list[int]:
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise StudioError(f"runs={text!r}: not a list of run ids", "pick runs from the list", field="runs") from None
    if not ids:
        raise StudioError("no runs picked", "pick one or more runs", field="runs")
    return ids


@router.get("/api/monitor/runs/{run_id}")
def api_summary(run_id: int, home: StudioHome = Depends(get_home)) -> dict:
    row = runs.get_run(home, run_id)
    rows, _ = read_new_rows(Path(row["output_dir"]) / "metrics.jsonl", 0)
    return {**summary(home, row, rows, None), "rows": rows}


@router.post("/api/monitor/runs/{run_id}/use")
def api_use(run_id: int, body: UseModel, home: StudioHome = Depends(get_home)) -> dict:
    return runs.set_chosen_model(home, run_id, body.model)


@router.get("/monitor", response_class=HTMLResponse, include_in_schema=False)
def page() -> HTMLResponse:
    body = (
        "<div class=monitor-top><div id=run-picker class=run-picker>Loading runs…</div>"
        "<div id=progress class=monitor-progress></div></div><div id=errors></div>"
        "<div id=charts class=charts></div>"
        "<div class=monitor-bottom><section><h2>Reading</h2><ul id=reading></ul><div id=best></div></section>"
        "<section><h2>Log</h2><pre id=log class=log></pre></section></div>")
    return render("Monitor", body, active="/monitor", scripts=("vendor/uplot/uPlot.iife.min.js", "monitor.js"))
