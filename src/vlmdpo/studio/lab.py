"""The Lab page: a base model and a tuned one answer the same image(s) and prompt side by side, streamed.

Generation runs in a `vlmdpo serve` worker (one process serving both models, adapters sharing their
base; reused while the pair of models stays the same); each answer's implicit DPO reward comes from
`vlmdpo judge --by implicit` in its own process. A verdict appends a TRL conversational pair to a
dataset file; a tie goes to `<dataset>.ties.jsonl` in the candidates format instead, because a tie is
not a preference DPO can learn from, but it can be labelled later on the Label page.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import tempfile
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import FileResponse, StreamingResponse

from vlmdpo.studio import servers
from vlmdpo.studio.app import get_home
from vlmdpo.studio.errors import StudioError
from vlmdpo.studio.home import StudioHome
from vlmdpo.studio.page import esc, render
from vlmdpo.studio.worker_lab import LabRequest, implicit_rewards, stream_pair

IMAGE_TYPES = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"GIF8": ".gif", b"RIFF": ".webp"}
_locks: dict[str, asyncio.Lock] = {}
_append_lock = threading.Lock()


@asynccontextmanager
async def _lifespan(app):
    yield
    home = app.state.home  # the lab's worker is the studio's helper: it ends with the studio
    for row in servers.servers(home, "lab"):
        if row["status"] in ("starting", "running"):
            servers.stop_server(home, row["id"])


router = APIRouter(lifespan=_lifespan)


def _number(body: dict, key: str, low: float, high: float, default: float, kind: type = float) -> Any:
    value = body.get(key, default)
    if value is None or value == "":
        value = default
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise StudioError(f"{key}: {value!r} is not a {'whole ' if kind is int else ''}number",
                          f"enter a number in [{low}, {high}]", field=key) from None
    if kind is int and number != float(value):
        raise StudioError(f"{key}: {value!r} is not a whole number", f"enter a whole number in [{low}, {high}]",
                          field=key)
    if not low <= number <= high:
        raise StudioError(f"{key}: {value!r} is outside [{low}, {high}]", f"enter a number in [{low}, {high}]",
                          field=key)
    return number


def lab_request(home: StudioHome, body: dict) -> LabRequest:
    """The request's models, images (confined, existing) and settings, each problem naming its field."""
    images = body.get("images") or []
    if not isinstance(images, list) or len(images) > 8:
        raise StudioError("images: expected a list of at most 8 paths", "pick up to 8 images", field="images")
    paths = [home.confine(p, field="images", must_exist=True) for p in images]
    prompt = str(body.get("prompt") or "").strip()
    if not prompt:
        raise StudioError("no prompt given", "type what to ask about the image(s)", field="prompt")
    settings = {"max_tokens": _number(body, "max_tokens", 1, 4096, 128, int),
                "temperature": _number(body, "temperature", 0.0, 2.0, 0.0),
                "top_p": _number(body, "top_p", 0.01, 1.0, 1.0), "seed": _number(body, "seed", 0, 2**31 - 1, 0, int)}
    return LabRequest(servers.model_source(home, body.get("base"), "base"),
                      servers.model_source(home, body.get("tuned"), "tuned"), paths, prompt, settings)


def _lock(home: StudioHome) -> asyncio.Lock:
    return _locks.setdefault(str(home.root), asyncio.Lock())


def _pick_worker(home: StudioHome, models: list[tuple[str, str]]) -> dict:
    current = [r for r in servers.servers(home, "lab") if r["status"] in ("starting", "running")]
    row = next((r for r in current if r["models"] == [tuple(m) for m in models]), None)
    for other in current:
        if other is not row:  # one lab worker at a time: models are large
            servers.stop_server(home, other["id"])
    return row or servers.start_server(home, "lab", models)


async def ensure_worker(home: StudioHome, models: list[tuple[str, str]]) -> dict:
    """The running lab worker for exactly these models: reused, or started after stopping another."""
    from starlette.concurrency import run_in_threadpool

    async with _lock(home):  # two requests at once must not start two servers
        row = await run_in_threadpool(_pick_worker, home, models)
        return await servers.wait_running(home, row["id"])


# --------------------------------------------------------------------------------- verdicts
def _answers(body: dict) -> list[str]:
    answers = body.get("answers")
    if not (isinstance(answers, list) and len(answers) == 2 and all(isinstance(a, str) for a in answers)):
        raise StudioError("answers: expected the two answers [left, right]", "generate first", field="answers")
    return answers


def _dataset(home: StudioHome, value: Any) -> Path:
    path = home.confine(value, field="dataset")
    if path.suffix != ".jsonl" or path.is_dir():
        raise StudioError(f"{value}: pairs are appended to a .jsonl file", "name a file ending in .jsonl",
                          field="dataset")
    return path


def _check_row(home: StudioHome, row: dict) -> None:
    """The row as `vlmdpo data check` reads it, before it joins the file (which so stays valid)."""
    from vlmdpo.data.stats import check_data

    with tempfile.TemporaryDirectory(dir=home.root / "logs", prefix="lab-check-") as tmp:
        probe = Path(tmp, "pair.jsonl")
        probe.write_text(json.dumps(row) + "\n", encoding="utf-8")
        report = check_data(str(probe))
    if not report.ok:
        problem = report.errors[0]
        raise StudioError(f"this pair would not pass `vlmdpo data check`: {problem.field}: {problem.message}",
                          problem.fix or "regenerate the answers", field="answers")


def append_verdict(home: StudioHome, req: LabRequest, answers: list[str], choice: str, dataset: Path) -> dict:
    """left/right: one TRL pair appended to `dataset`; tie: a candidates row appended to its ties file."""
    from vlmdpo.engine.jsonl import append_row
    from vlmdpo.engine.pairs import pair_rows

    meta = {"studio": "lab", "left": req.base, "right": req.tuned, **req.settings, "time": _now()}
    base = {"id": f"lab-{uuid.uuid4().hex[:12]}", "prompt": req.messages(), "images": [str(p) for p in req.images]}
    if choice == "tie":
        target, row = dataset.with_name(dataset.stem + ".ties.jsonl"), {**base, "candidates": answers, "meta": meta}
    elif choice in ("left", "right"):
        good, bad = answers if choice == "left" else answers[::-1]
        if good.strip() == bad.strip():
            raise StudioError("the two answers are the same text, so neither is better", "record a tie, or "
                              "generate again with another seed or temperature", field="choice")
        target, row = dataset, {**next(pair_rows(base, [(good, bad)])), "meta": {**meta, "better": choice}}
        _check_row(home, row)
    else:
        raise StudioError(f"choice: {choice!r}", "send left, right or tie", field="choice")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _append_lock, open(target, "a", encoding="utf-8") as fh:
        append_row(fh, row)
    with open(target, encoding="utf-8") as fh:
        rows = sum(1 for line in fh if line.strip())
    return {"path": str(target), "rows": rows, "kind": "tie" if choice == "tie" else "pair", "id": row["id"]}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ------------------------------------------------------------------------------------ routes
@router.get("/api/lab/models")
def models(home: StudioHome = Depends(get_home)) -> dict:
    live = [r for r in servers.servers(home, "lab") if r["status"] in ("starting", "running")]
    return {"runs": servers.runs(home), "worker": live[0] if live else None}


@router.post("/api/lab/upload")
def upload(body: dict = Body(...), home: StudioHome = Depends(get_home)) -> dict:
    """An image sent as a data URI, stored once under uploads/lab/ by its content hash."""
    data = str(body.get("data") or "")
    head, _, payload = data.partition(",")
    if not head.startswith("data:image/") or ";base64" not in head:
        raise StudioError("upload: not an image data URI", "pick a PNG, JPEG, GIF or WebP file", field="images")
    if len(payload) * 3 / 4 > home.max_upload_mb * 2**20:
        raise StudioError(f"upload: over the {home.max_upload_mb:g} MB limit", "pick a smaller image",
                          field="images", status=413)
    try:
        raw = base64.b64decode(payload, validate=True)
    except ValueError:
        raise StudioError("upload: the data URI is not valid base64", "pick the file again", field="images") from None
    ext = next((e for magic, e in IMAGE_TYPES.items() if raw.startswith(magic)), None)
    if ext is None:
        raise StudioError("upload: not a PNG, JPEG, GIF or WebP image", "pick an image file", field="images")
    from vlmdpo.atomic import write_bytes

    path = home.root / "uploads" / "lab" / f"{hashlib.sha256(raw).hexdigest()[:16]}{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        write_bytes(path, raw)
    return {"path": str(path)}


@router.get("/api/lab/image")
def image(path: str, home: StudioHome = Depends(get_home)) -> FileResponse:
    found = home.confine(path, field="path", must_exist=True)
    if found.suffix.lower() not in (".png", ".jpg", ".jpeg", ".gif", ".webp") or not found.is_file():
        raise StudioError(f"{path}: not an image file", "pick a .png, .jpg, .gif or .webp file", field="path")
    return FileResponse(found)


@router.post("/api/lab/worker")
async def start_worker(body: dict = Body(...), home: StudioHome = Depends(get_home)) -> dict:
    models = [("base", servers.model_source(home, body.get("base"), "base")),
              ("tuned", servers.model_source(home, body.get("tuned"), "tuned"))]
    return await ensure_worker(home, models)


@router.delete("/api/lab/worker")
def stop_worker(home: StudioHome = Depends(get_home)) -> dict:
    stopped = [servers.stop_server(home, r["id"])["id"] for r in servers.servers(home, "lab")
               if r["status"] in ("starting", "running")]
    return {"stopped": stopped}


@router.post("/api/lab/generate")
async def generate(body: dict = Body(...), home: StudioHome = Depends(get_home)) -> StreamingResponse:
    req = lab_request(home, body)
    worker = await ensure_worker(home, req.models)
    return StreamingResponse(stream_pair(worker["port"], req), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


@router.post("/api/lab/reward")
def reward(body: dict = Body(...), home: StudioHome = Depends(get_home)) -> dict:
    beta = body.get("beta")
    beta = None if beta in (None, "") else _number(body, "beta", 1e-6, 100.0, 0.1)
    return implicit_rewards(home, lab_request(home, body), _answers(body), beta)


@router.post("/api/lab/prefer")
def prefer(body: dict = Body(...), home: StudioHome = Depends(get_home)) -> dict:
    req, dataset = lab_request(home, body), _dataset(home, body.get("dataset"))
    written = append_verdict(home, req, _answers(body), str(body.get("choice")), dataset)
    home.set_setting("lab_dataset", str(dataset))
    return written


@router.get("/lab", include_in_schema=False)
def lab_page(home: StudioHome = Depends(get_home)):
    default_set = esc(home.setting("lab_dataset") or "labels/lab_pairs.jsonl")
    setting = "<label class=field><span class=key>{0}</span><input name={1} type=number step=any value='{2}' " \
              "size=6><span class=field-error></span></label>"
    body = f"""
<form id=lab-form autocomplete=off>
 <section class=card><h2>Models</h2><div class=row>
  <label class='field grow'><span class=key>base model</span>
   <input name=base list=named-models placeholder="tiny:idefics3, a folder or owner/name"><span class=field-error></span>
  </label>
  <label class=field><span class=key>tuned run</span>
   <select name=run><option value="">(a model folder or name beside)</option></select></label>
  <label class='field grow'><span class=key>tuned model</span>
   <input name=tuned placeholder="a run's output_dir, a folder or name"><span class=field-error></span></label>
  <datalist id=named-models><option value="tiny:idefics3"><option value="tiny:qwen2_vl">
   <option value="builtin:nano-smolvlm"></datalist>
 </div></section>
 <section class=card><h2>Input</h2>
  <div class=row><label class=field><span class=key>images</span>
   <input type=file name=upload accept="image/*" multiple></label>
  <label class='field grow'><span class=key>or a path</span>
   <input name=image_path placeholder="uploads/photo.png"><span class=field-error></span></label>
  <button type=button id=add-image>Add</button></div>
  <div id=images class=lab-thumbs></div>
  <label class=field><span class=key>prompt</span><textarea name=prompt rows=3>Describe this image.</textarea>
   <span class=field-error></span></label>
  <div class=row>{setting.format("max tokens", "max_tokens", 64)}{setting.format("temperature", "temperature", 0)}
   {setting.format("top p", "top_p", 1)}{setting.format("seed", "seed", 0)}
   <button type=submit id=generate class=primary>Generate both</button>
   <button type=button id=stop-worker>Stop worker</button><span id=worker-status class=muted></span></div>
 </section>
</form>
<div id=errors></div>
<div class=answers>
 <section class=answer id=left><h2>Base <small class=model-name></small></h2><pre class=text></pre>
  <div class=reward>implicit reward: <b>–</b></div></section>
 <section class=answer id=right><h2>Tuned <small class=model-name></small></h2><pre class=text></pre>
  <div class=reward>implicit reward: <b>–</b></div></section>
</div>
<form id=verdict-form class="card row">
 <label class='field grow'><span class=key>append pairs to</span><input name=dataset value="{default_set}">
  <span class=field-error></span></label>
 <button type=button class=primary data-choice=left disabled>◀ Left better</button>
 <button type=button class=primary data-choice=tie disabled>Tie</button>
 <button type=button class=primary data-choice=right disabled>Right better ▶</button>
 <span id=verdict-status></span>
</form>"""
    return render("Lab", body, active="/lab", scripts=("lab.js",))
