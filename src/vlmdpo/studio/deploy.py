"""The Export & deploy page: export a run (merged: `vlmdpo export` in its own process; adapter: the run's
adapter files copied into a new folder), then start / stop `vlmdpo serve` for an export, a run or any model
folder, and show its endpoint with curl and openai-client snippets.

Servers are `servers` rows (kind "deploy") with pid and port: they keep running when the studio stops, and
a restarted studio finds them again. Exports are `exports` rows; their log tail is shown while they run.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends

from vlmdpo.studio import processes, servers
from vlmdpo.studio.app import get_home
from vlmdpo.studio.errors import StudioError
from vlmdpo.studio.home import StudioHome
from vlmdpo.studio.page import render

router = APIRouter()
MODES = ("merged", "adapter")
MANIFEST = ".vlmdpo_export.json"  # as export.py writes it: the folder is an export a --force may replace
DTYPES = ("auto", "float32", "bfloat16", "float16")


def snippets(name: str, port: int) -> dict[str, str]:
    """How a client calls the endpoint: curl and the openai package, with this server's model name and port."""
    url = f"http://127.0.0.1:{port}/v1"
    curl = (f"curl {url}/chat/completions -H 'Content-Type: application/json' -d '{{\"model\": {json.dumps(name)}, "
            "\"max_tokens\": 128, \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", "
            "\"image_url\": {\"url\": \"data:image/png;base64,'\"$(base64 -w0 photo.png)\"'\"}}, "
            "{\"type\": \"text\", \"text\": \"Describe the image.\"}]}]}'")
    python = f"""import base64
from openai import OpenAI

client = OpenAI(base_url="{url}", api_key="none")
image = base64.b64encode(open("photo.png", "rb").read()).decode()
reply = client.chat.completions.create(model={json.dumps(name)}, max_tokens=128, messages=[{{"role": "user", "content": [
    {{"type": "image_url", "image_url": {{"url": f"data:image/png;base64,{{image}}"}}}},
    {{"type": "text", "text": "Describe the image."}}]}}])
print(reply.choices[0].message.content)
"""
    return {"url": url, "curl": curl, "python": python}


def _with_snippets(row: dict) -> dict:
    name = row["models"][0][0]
    return {**row, "name": name, "source": row["models"][0][1], **snippets(name, row["port"])}


# ------------------------------------------------------------------------------------ exports
def _export_row(home: StudioHome, eid: int) -> dict:
    with home.db() as con:
        r = con.execute("SELECT * FROM exports WHERE id = ?", (eid,)).fetchone()
    if r is None:
        raise StudioError(f"export {eid}: not found", "reload the page", field="id", status=404)
    row = dict(r)
    if row["status"] == "running" and not processes.alive(row["pid"]):
        code = processes.exit_code(row["pid"])  # None: started by an earlier studio; its folder tells
        ok = code == 0 or code is None and (Path(row["output_dir"]) / MANIFEST).is_file()
        status = "finished" if ok else "failed"
        message = None if ok else "the export failed:\n" + processes.log_tail(row["log_path"])
        with home.db() as con:
            con.execute("UPDATE exports SET status = ?, message = ?, updated = ? WHERE id = ?",
                        (status, message, time.time(), eid))
        row.update(status=status, message=message)
    row["log"] = processes.log_tail(row["log_path"], 12)
    return row


def _output(home: StudioHome, body: dict, source: Path, mode: str) -> Path:
    value = body.get("output") or f"exports/{source.name}-{mode}"
    out = home.confine(value, field="output")
    if out == source or out in source.parents or source in out.parents:
        raise StudioError(f"{value}: the export cannot go into (or around) the run it reads",
                          "choose a new folder, e.g. under exports/", field="output")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not body.get("force"):
        raise StudioError(f"{value}: already exists and is not empty", "choose another folder, or tick "
                          "'replace' to overwrite an earlier export", field="output", status=409)
    return out


def copy_adapter(source: Path, out: Path) -> list[str]:
    """The run's adapter and processor files (not its checkpoints) into `out`, which appears whole."""
    from vlmdpo.atomic import sync_tree

    if not (source / "adapter_config.json").is_file():
        raise StudioError(f"{source}: has no adapter_config.json (not a LoRA run, or not finished)",
                          "export it merged, or pick a finished LoRA run", field="mode")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise StudioError(f"{out}: holds files that are not an earlier export", "choose another folder",
                          field="output", status=409)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        names = sorted(p.name for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
        for name in names:
            shutil.copy2(source / name, tmp / name)
        (tmp / MANIFEST).write_text(json.dumps(names, indent=1), encoding="utf-8")
        sync_tree(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return names


@router.post("/api/deploy/export")
def export(body: dict = Body(...), home: StudioHome = Depends(get_home)) -> dict:
    source = home.confine(body.get("source"), field="source", must_exist=True)
    mode, dtype = body.get("mode") or "merged", body.get("dtype") or "auto"
    if mode not in MODES:
        raise StudioError(f"mode {mode!r}", "choose merged or adapter", field="mode")
    if dtype not in DTYPES:
        raise StudioError(f"dtype {dtype!r}", f"choose one of {', '.join(DTYPES)}", field="dtype")
    out = _output(home, body, source, mode)
    now = time.time()
    with home.db() as con:
        eid = con.execute("INSERT INTO exports(source, mode, output_dir, status, log_path, created, updated) "
                          "VALUES(?, ?, ?, 'running', '', ?, ?)", (str(source), mode, str(out), now, now)).lastrowid
    log = home.root / "logs" / f"export-{eid}.log"
    if mode == "adapter":
        try:
            names = copy_adapter(source, out)
        except StudioError as exc:
            with home.db() as con:
                con.execute("DELETE FROM exports WHERE id = ?", (eid,))
            raise exc
        log.write_text(f"copied {len(names)} adapter file(s) from {source} to {out}: {', '.join(names)}\n")
        with home.db() as con:
            con.execute("UPDATE exports SET status = 'finished', log_path = ? WHERE id = ?", (str(log), eid))
        return _export_row(home, eid)
    args = ["export", "--model", str(source), "-o", str(out), "--dtype", dtype] + (["--force"] if body.get("force")
                                                                                  else [])
    proc = processes.launch(args, log)
    with home.db() as con:
        con.execute("UPDATE exports SET pid = ?, log_path = ? WHERE id = ?", (proc.pid, str(log), eid))
    return _export_row(home, eid)


@router.get("/api/deploy/exports/{eid}")
def export_status(eid: int, home: StudioHome = Depends(get_home)) -> dict:
    return _export_row(home, eid)


# ------------------------------------------------------------------------------------ servers
def _served_name(value: Any, source: str) -> str:
    name = str(value or "").strip() or Path(source).name or source
    name = re.sub(r"[^\w.:-]+", "-", name).strip("-")
    if not name or "=" in name:
        raise StudioError(f"name {value!r}: not a usable model name", "use letters, digits, '-', '_' or '.'",
                          field="name")
    return name


@router.post("/api/deploy/serve")
def start(body: dict = Body(...), home: StudioHome = Depends(get_home)) -> dict:
    source = servers.model_source(home, body.get("source"), "source")
    port = body.get("port")
    port = servers.check_port(int(port) if str(port).isdigit() else port) if port not in (None, "") else None
    row = servers.start_server(home, "deploy", [(_served_name(body.get("name"), source), source)], port)
    return _with_snippets(row)


@router.get("/api/deploy/servers/{sid}")
def server_status(sid: int, home: StudioHome = Depends(get_home)) -> dict:
    row = servers.server(home, sid)
    if row["kind"] != "deploy":
        raise StudioError(f"server {sid}: not a deployed endpoint", "reload the page", field="id", status=404)
    return {**_with_snippets(row), "log": processes.log_tail(row["log_path"], 12)}


@router.post("/api/deploy/servers/{sid}/stop")
def stop(sid: int, home: StudioHome = Depends(get_home)) -> dict:
    server_status(sid, home)
    return _with_snippets(servers.stop_server(home, sid))


@router.get("/api/deploy/state")
def state(home: StudioHome = Depends(get_home)) -> dict:
    with home.db() as con:
        ids = [r["id"] for r in con.execute("SELECT id FROM exports ORDER BY id DESC LIMIT 20")]
    return {"runs": servers.runs(home), "exports": [_export_row(home, i) for i in ids],
            "servers": [_with_snippets(r) for r in servers.servers(home, "deploy")]}


@router.get("/deploy", include_in_schema=False)
def deploy_page():
    body = """
<div id=errors></div>
<form id=export-form class=card autocomplete=off><h2>Export a run</h2><div class=row>
 <label class=field><span class=key>run</span><select name=run><option value="">(or a folder beside)</option></select>
 </label>
 <label class='field grow'><span class=key>run folder</span><input name=source placeholder="runs/my-run">
  <span class=field-error></span></label>
 <label class=field><span class=key>mode</span><select name=mode>
  <option value=merged>merged (LoRA folded into the base)</option>
  <option value=adapter>adapter (the LoRA files only)</option></select><span class=field-error></span></label>
 <label class=field><span class=key>dtype</span><select name=dtype><option>auto</option><option>float32</option>
  <option>bfloat16</option><option>float16</option></select></label>
 <label class='field grow'><span class=key>output folder</span>
  <input name=output placeholder="default: exports/&lt;run&gt;-&lt;mode&gt;"><span class=field-error></span></label>
 <label class=field><span class=key>replace</span><input type=checkbox name=force></label>
 <button type=submit class=primary>Export</button></div>
 <div id=exports></div>
</form>
<form id=serve-form class=card autocomplete=off><h2>Serve a model</h2><div class=row>
 <label class='field grow'><span class=key>model</span>
  <input name=source list=served-sources placeholder="an export, a run folder or tiny:idefics3">
  <span class=field-error></span></label><datalist id=served-sources></datalist>
 <label class=field><span class=key>name clients use</span><input name=name placeholder="default: the folder name">
  <span class=field-error></span></label>
 <label class=field><span class=key>port</span><input name=port size=6 placeholder="free"><span class=field-error></span>
 </label>
 <button type=submit class=primary>Start serving</button></div>
</form>
<div id=servers></div>"""
    return render("Export & deploy", body, active="/deploy", scripts=("deploy.js",))
