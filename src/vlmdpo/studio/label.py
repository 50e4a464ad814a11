"""The Label page: a queue over a candidates file; a person picks the best answer (mouse or keys 1-9),
skips (s) or undoes (u, Backspace). The labels file is the state (see labels_file.py for its contract), so
a queue resumes where its file ends; the pairs file is rebuilt from it after every change. Sessions are
listed in SQLite (`label_sessions`) so the page can offer the recent ones.
"""
from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import FileResponse, Response

from vlmdpo.studio.app import get_home
from vlmdpo.studio.errors import StudioError
from vlmdpo.studio.home import StudioHome
from vlmdpo.engine.judge_labels import check_label, read_labels
from vlmdpo.errors import FixableError
from vlmdpo.studio.labels_file import (Item, QueueError, append_label, file_key, label_row, read_queue, undo_last,
                                       write_pairs)
from vlmdpo.studio.page import esc, render

router = APIRouter()
_lock = threading.Lock()  # one decision at a time: appends and pair rewrites never interleave
_queues: dict[tuple, list[Item]] = {}


def _queue(path: Path) -> list[Item]:
    key = file_key(path)
    if key not in _queues:
        for stale in [k for k in _queues if k[0] == key[0]]:  # an earlier version of the same file
            del _queues[stale]
        try:
            _queues[key] = read_queue(path)
        except QueueError as exc:
            raise StudioError(str(exc), exc.fix, field="candidates") from None
    return _queues[key]


def _session(home: StudioHome, sid: int) -> dict:
    with home.db() as con:
        row = con.execute("SELECT * FROM label_sessions WHERE id = ?", (sid,)).fetchone()
    if row is None:
        raise StudioError(f"label session {sid}: not found", "open the candidates file again", field="session",
                          status=404)
    return dict(row)


def _labels(path: Path, items: list[Item] | None = None) -> dict[str, dict]:
    """The decision per id (the last line of each wins), by `vlmdpo judge --by labels`'s own reader; with
    `items`, every id and index must fit that queue (a labels file resumed against another candidates file)."""
    if not path.exists():
        return {}
    counts = None if items is None else {item.row["id"]: len(item.row["candidates"]) for item in items}
    try:
        return read_labels(path, counts)
    except FixableError as exc:
        raise StudioError(exc.message, exc.fix or "fix or remove that line of the labels file",
                          field="labels") from None


def _state(home: StudioHome, session: dict, focus: int | None = None) -> dict:
    """Progress from the labels file itself; `index` is the item to show (focus, else the first undecided)."""
    items = _queue(Path(session["candidates"]))
    decisions = _labels(Path(session["labels"]))
    done = sum(item.row["id"] in decisions for item in items)
    index = focus if focus is not None else next((i.index for i in items if i.row["id"] not in decisions), None)
    with home.db() as con:
        con.execute("UPDATE label_sessions SET done = ?, total = ?, updated = ? WHERE id = ?",
                    (done, len(items), time.time(), session["id"]))
    return {"session": session["id"], "candidates": session["candidates"], "labels": session["labels"],
            "pairs": session["pairs"], "labeler": session["labeler"], "total": len(items), "done": done,
            "index": index}


def _rebuild_pairs(session: dict) -> tuple[int, int]:
    items = _queue(Path(session["candidates"]))
    decisions = _labels(Path(session["labels"]))
    return write_pairs(items, decisions, Path(session["pairs"]), {"studio": "label", "candidates": session["candidates"]})


def _sibling(candidates: Path, value: Any, suffix: str, home: StudioHome, field: str) -> Path:
    path = home.confine(value, field=field) if value else candidates.with_name(candidates.stem + suffix)
    if path.suffix != ".jsonl" or path.is_dir() or path == candidates:
        raise StudioError(f"{path}: must be its own .jsonl file", "name a file ending in .jsonl", field=field)
    return path


@router.post("/api/label/open")
def open_queue(body: dict = Body(...), home: StudioHome = Depends(get_home)) -> dict:
    candidates = home.confine(body.get("candidates"), field="candidates", must_exist=True)
    if not candidates.is_file():
        raise StudioError(f"{candidates}: not a file", "pass the JSONL `vlmdpo sample` writes", field="candidates")
    labels = _sibling(candidates, body.get("labels"), ".labels.jsonl", home, "labels")
    pairs = _sibling(candidates, body.get("pairs"), ".pairs.jsonl", home, "pairs")
    if labels == pairs:
        raise StudioError("labels and pairs name the same file", "give the pairs their own file", field="pairs")
    labeler = str(body.get("labeler") or home.setting("labeler") or "studio").strip()[:80]
    items = _queue(candidates)
    _check_images(home, items)
    _labels(labels, items)
    now = time.time()
    with home.db() as con:
        con.execute("INSERT INTO label_sessions(candidates, labels, pairs, labeler, total, done, created, updated) "
                    "VALUES(?, ?, ?, ?, ?, 0, ?, ?) ON CONFLICT(candidates, labels) DO UPDATE SET "
                    "pairs = excluded.pairs, labeler = excluded.labeler, updated = excluded.updated",
                    (str(candidates), str(labels), str(pairs), labeler, len(items), now, now))
        sid = con.execute("SELECT id FROM label_sessions WHERE candidates = ? AND labels = ?",
                          (str(candidates), str(labels))).fetchone()["id"]
    home.set_setting("labeler", labeler)
    session = _session(home, sid)
    with _lock:
        _rebuild_pairs(session)
    return _state(home, session)


def _check_images(home: StudioHome, items: list[Item]) -> None:
    """The page shows a row's images, so they too must lie inside the studio's roots."""
    for item in items:
        for k, value in enumerate(item.images):
            if not value.startswith(("data:", "http://", "https://")):
                try:
                    home.confine(value, field="candidates")
                except StudioError as exc:
                    raise StudioError(f"{item.where}: field 'images[{k}]': {exc.message}", exc.fix,
                                      field="candidates", status=exc.status) from None


@router.get("/api/label/sessions")
def sessions(home: StudioHome = Depends(get_home)) -> list[dict]:
    with home.db() as con:
        return [dict(r) for r in con.execute("SELECT * FROM label_sessions ORDER BY updated DESC LIMIT 20")]


@router.get("/api/label/{sid}")
def state(sid: int, home: StudioHome = Depends(get_home)) -> dict:
    return _state(home, _session(home, sid))


def _item(home: StudioHome, sid: int, index: int) -> tuple[dict, Item]:
    session = _session(home, sid)
    items = _queue(Path(session["candidates"]))
    if not 0 <= index < len(items):
        raise StudioError(f"index {index}: the queue has rows 0..{len(items) - 1}", "reload the page",
                          field="index", status=404)
    return session, items[index]


@router.get("/api/label/{sid}/item/{index}")
def item(sid: int, index: int, home: StudioHome = Depends(get_home)) -> dict:
    session, it = _item(home, sid, index)
    decision = _labels(Path(session["labels"])).get(it.row["id"])
    images = [v if v.startswith(("data:", "http")) else f"/api/label/{sid}/image/{index}/{k}"
              for k, v in enumerate(it.images)]
    return {"index": index, "id": it.row["id"], "prompt": it.row["prompt"], "images": images,
            "candidates": it.row["candidates"], "decision": decision}


@router.get("/api/label/{sid}/image/{index}/{k}")
def image(sid: int, index: int, k: int, home: StudioHome = Depends(get_home)) -> Response:
    """An image the candidates row names (the browser sends indexes, never a path)."""
    _, it = _item(home, sid, index)
    if not 0 <= k < len(it.images):
        raise StudioError(f"image {k}: row {index} has {len(it.images)}", "reload the page", field="k", status=404)
    value = it.images[k]
    if not value.startswith("data:"):
        value = str(home.confine(value, field="k", must_exist=True))  # as checked when the queue opened
    if value.startswith("data:"):
        head, _, payload = value.partition(",")
        return Response(base64.b64decode(payload), media_type=head[5:].split(";")[0])
    return FileResponse(value)


@router.post("/api/label/{sid}/decide")
def decide(sid: int, body: dict = Body(...), home: StudioHome = Depends(get_home)) -> dict:
    session = _session(home, sid)
    items = {it.row["id"]: it for it in _queue(Path(session["candidates"]))}
    it = items.get(body.get("id"))
    if it is None:
        raise StudioError(f"id {body.get('id')!r}: not a row of {session['candidates']}", "reload the page",
                          field="id")
    n = len(it.row["candidates"])
    skip = body.get("skip") is True
    best = None if skip else body.get("best")
    worst = None if skip else body.get("worst", 1 - best if n == 2 and isinstance(best, int) else None)
    row = label_row(it.row["id"], best, worst, skip, session["labeler"])
    try:
        check_label(row, "request", n)
    except FixableError as exc:
        field = "worst" if "'worst'" in exc.message else "best"
        raise StudioError(exc.message.removeprefix("request: "), f"pick an answer 1..{n}", field=field) from None
    with _lock:
        append_label(Path(session["labels"]), row)
        pairs, left_out = _rebuild_pairs(session)
    return {**_state(home, session), "pairs_written": pairs, "left_out": left_out}


@router.post("/api/label/{sid}/undo")
def undo(sid: int, home: StudioHome = Depends(get_home)) -> dict:
    session = _session(home, sid)
    with _lock:
        removed = undo_last(Path(session["labels"]))
        pairs, left_out = _rebuild_pairs(session)
    if removed is None:
        raise StudioError("nothing to undo", "label a row first", field="undo", status=409)
    focus = next((i.index for i in _queue(Path(session["candidates"])) if i.row["id"] == removed["id"]), None)
    return {**_state(home, session, focus), "undone": removed, "pairs_written": pairs, "left_out": left_out}


@router.get("/label", include_in_schema=False)
def label_page(home: StudioHome = Depends(get_home)):
    labeler = esc(home.setting("labeler") or "")
    body = f"""
<form id=open-form class=card autocomplete=off><div class=row>
 <label class='field grow'><span class=key>candidates file</span>
  <input name=candidates placeholder="candidates.jsonl from vlmdpo sample"><span class=field-error></span></label>
 <label class=field><span class=key>labels file</span>
  <input name=labels placeholder="default: &lt;candidates&gt;.labels.jsonl"><span class=field-error></span></label>
 <label class=field><span class=key>pairs file</span>
  <input name=pairs placeholder="default: &lt;candidates&gt;.pairs.jsonl"><span class=field-error></span></label>
 <label class=field><span class=key>labeler</span><input name=labeler size=12 value="{labeler}">
  <span class=field-error></span></label>
 <button type=submit class=primary>Open queue</button></div>
</form>
<div id=errors></div>
<section id=queue hidden>
 <div class=row><b id=progress-text></b>
  <span class=muted>keys: <kbd>1</kbd>…<kbd>9</kbd> best · <kbd>Shift</kbd>+<kbd>1</kbd>… worst (3+ answers) ·
  <kbd>s</kbd> skip · <kbd>u</kbd>/<kbd>⌫</kbd> undo</span>
  <button type=button id=skip>Skip</button><button type=button id=undo>Undo</button>
  <span id=saved class=muted></span></div>
 <div class=bar><span id=progress-bar style="width:0%"></span></div>
 <div class=card><div class=label-images id=label-images></div><div id=prompt></div></div>
 <div class=answers id=answers></div>
</section>
<section id=finished hidden class=card><b>All rows are labelled.</b> <span id=finished-text></span>
 <button type=button id=undo-last>Undo the last one</button></section>"""
    return render("Label", body, active="/label", scripts=("label.js",))
