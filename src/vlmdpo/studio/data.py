"""The Data page: pick or upload preference data, check it (`vlmdpo data check`), page through its pairs as
the model will see them (`vlmdpo data show`), and describe it (`vlmdpo data stats`) with histograms.

Every path comes from the browser and goes through `StudioHome.confine`; images are served only from
inside the allowed roots.
"""
from __future__ import annotations

import base64
import mimetypes
from collections import defaultdict
from itertools import islice
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse

from vlmdpo.data.validate import DataError
from vlmdpo.errors import FixableError
from vlmdpo.studio import uploads
from vlmdpo.studio.app import get_home
from vlmdpo.studio.errors import StudioError
from vlmdpo.studio.home import StudioHome
from vlmdpo.studio.page import render
from vlmdpo.types import ImageRef, Message, PreferenceRecord, RowError

router = APIRouter()
PAGE_SIZE = 10
MAX_PAGE_SIZE = 50
MAX_LISTED = 500
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
INLINE_IMAGE_BYTES = 2 << 20


def _source(home: StudioHome, path: str) -> str:
    return str(home.confine(path, field="path", must_exist=True))


def _load_kwargs(fmt: str, image_root: str | None, home: StudioHome) -> dict[str, Any]:
    root = str(home.confine(image_root, field="image_root", must_exist=True)) if image_root else None
    return {"format": fmt or "auto", "image_root": root}


LIBRARY_ERRORS = (FixableError, DataError, ValueError, OSError)


def _library_error(e: Exception) -> StudioError:
    """A data library error as the page shows it: at the path field, with the library's fix."""
    if isinstance(e, DataError):
        return StudioError("; ".join(str(err) for err in e.errors[:3]) or str(e), "fix the file, or pick another",
                           field="path")
    if isinstance(e, FixableError):
        return StudioError(e.message, e.fix, field="path")
    return StudioError(str(e).splitlines()[0] if str(e) else type(e).__name__,
                       "check the path and the format", field="path")


# ----------------------------------------------------------------------------------------- browse
@router.get("/api/data/browse")
def api_browse(path: str = "", home: StudioHome = Depends(get_home)) -> dict:
    """A folder's entries (folders first), confined to the roots; with no path, the roots themselves."""
    if not path:
        return {"path": "", "parent": None, "roots": [str(r) for r in home.roots],
                "entries": [{"name": str(r), "path": str(r), "kind": "dir"} for r in home.roots]}
    folder = home.confine(path, field="path", must_exist=True)
    if not folder.is_dir():
        folder = folder.parent
    entries = []
    for child in sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name.lower()))[:MAX_LISTED]:
        if child.name.startswith("."):
            continue
        entries.append({"name": child.name, "path": str(child), "kind": "dir" if child.is_dir() else "file",
                        "size": child.stat().st_size if child.is_file() else None})
    parent = folder.parent if any(folder != r for r in home.roots) and _inside(home, folder.parent) else None
    return {"path": str(folder), "parent": str(parent) if parent else "", "entries": entries}


def _inside(home: StudioHome, path: Path) -> bool:
    return any(path == r or r in path.parents for r in home.roots)


# ----------------------------------------------------------------------------------------- upload
@router.post("/api/data/upload")
async def api_upload(request: Request, name: str = "", home: StudioHome = Depends(get_home)) -> dict:
    folder = await uploads.receive_upload(request, home, name)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    data = [f for f in files if f.lower().endswith((".jsonl", ".json", ".parquet"))]
    return {"path": str(folder), "files": files, "data_files": data}


# ------------------------------------------------------------------------------------------ check
def check_groups(errors: list[RowError]) -> list[dict[str, Any]]:
    """Row errors grouped by kind, most frequent first (as `vlmdpo data check` prints them)."""
    groups: dict[str, list[RowError]] = defaultdict(list)
    for err in errors:
        groups[err.kind].append(err)
    return [{"kind": kind, "count": len(errs),
             "errors": [{"file": e.file, "row": e.row, "field": e.field, "message": e.message, "fix": e.fix,
                         "where": f"{e.file}:{e.row}" if e.row else e.file} for e in errs[:MAX_LISTED]]}
            for kind, errs in sorted(groups.items(), key=lambda kv: -len(kv[1]))]


@router.get("/api/data/check")
def api_check(path: str = "", format: str = "auto", image_root: str | None = None, decode_images: bool = False,
              home: StudioHome = Depends(get_home)) -> dict:
    from vlmdpo.data.stats import check_data

    source = _source(home, path)
    try:
        report = check_data(source, check_images="decode" if decode_images else "header",
                            **_load_kwargs(format, image_root, home))
    except DataError as e:  # the file as a whole cannot be read: its problems are the check's result
        return {"ok": False, "formats": {}, "notes": [], "read": 0, "kept": 0, "skipped": 0,
                "groups": check_groups(e.errors)}
    except LIBRARY_ERRORS as e:
        raise _library_error(e) from None
    return {"ok": report.ok, "formats": report.formats, "notes": report.notes, "read": report.n_read,
            "kept": report.n_kept, "skipped": report.n_skipped, "groups": check_groups(report.errors)}


# ---------------------------------------------------------------------------------------- preview
def _image_src(ref: ImageRef) -> str | None:
    if ref.path is not None:
        return f"/api/data/image?path={_quote(ref.path)}"
    if ref.data is not None and len(ref.data) <= INLINE_IMAGE_BYTES:
        mime = "image/png" if ref.data[:4] == b"\x89PNG" else "image/jpeg"
        return f"data:{mime};base64,{base64.b64encode(ref.data).decode('ascii')}"
    return ref.url


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _messages(msgs: list[Message], refs: list[ImageRef]) -> list[dict[str, Any]]:
    """Messages with each image part bound to the image it stands for, in order (as data show numbers them)."""
    from vlmdpo.data.show import _parts

    out, k = [], 0
    for m in msgs:
        parts = []
        for p in _parts(m):
            if p["type"] == "image":
                ref = refs[k] if k < len(refs) else None
                parts.append({"type": "image", "index": k, "src": _image_src(ref) if ref else None,
                              "label": ref.origin or ref.describe() if ref else "no image given"})
                k += 1
            else:
                parts.append({"type": p["type"], "text": p["text"]})
        out.append({"role": m.get("role"), "parts": parts})
    return out


def preview_record(record: PreferenceRecord) -> dict[str, Any]:
    """One pair for the page: the prompt, chosen and rejected as the model sees them, and `data show`'s text."""
    from vlmdpo.data.show import render_text

    src = record.source
    return {"id": record.id, "file": src.file if src else None, "row": src.row if src else None,
            "prompt": _messages(record.prompt, record.images), "chosen": _messages(record.chosen, []),
            "rejected": _messages(record.rejected, []),
            "rejected_prompt": (_messages(record.prompt, record.rejected_images)
                                if record.rejected_images is not None else None),
            "text": render_text(record), "meta": record.meta or None}


@router.get("/api/data/preview")
def api_preview(path: str = "", page: int = 0, size: int = PAGE_SIZE, format: str = "auto",
                image_root: str | None = None, home: StudioHome = Depends(get_home)) -> dict:
    from vlmdpo.data.load import iter_preferences

    if page < 0 or not 1 <= size <= MAX_PAGE_SIZE:
        raise StudioError(f"page {page}, size {size}: out of range", f"page >= 0 and size 1-{MAX_PAGE_SIZE}",
                          field="page")
    source = _source(home, path)
    try:
        stream = iter_preferences(source, on_invalid="skip", check_images="none",
                                  **_load_kwargs(format, image_root, home))
        valid = (r for r in stream if isinstance(r, PreferenceRecord))
        records = list(islice(valid, page * size, page * size + size + 1))
    except LIBRARY_ERRORS as e:
        raise _library_error(e) from None
    return {"page": page, "size": size, "more": len(records) > size,
            "pairs": [preview_record(r) for r in records[:size]]}


@router.get("/api/data/row")
def api_row(path: str = "", row: str = "", format: str = "auto", image_root: str | None = None,
            home: StudioHome = Depends(get_home)) -> dict:
    """One row by FILE:N or N (as `data check` names it): its pair, or why it has none and its raw line."""
    from vlmdpo.data.show import RowNotFound, find_record, parse_row

    source = _source(home, path)
    try:
        record = find_record(source, row, **_load_kwargs(format, image_root, home))
    except RowNotFound as e:
        file, n = parse_row(row) if row else (None, 0)
        return {"pair": None, "problem": e.message, "raw": _raw_line(home, file, n)}
    except LIBRARY_ERRORS as e:
        raise _library_error(e) from None
    return {"pair": preview_record(record)}


def _raw_line(home: StudioHome, file: str | None, n: int) -> str | None:
    """Line n of a JSONL file (the row as written), when the file is one the studio may read."""
    if not file or not file.endswith(".jsonl") or n < 1:
        return None
    try:
        path = home.confine(file, field="row", must_exist=True)
        with open(path, encoding="utf-8", errors="replace") as f:
            line = next(islice(f, n - 1, n), None)
    except (StudioError, OSError):
        return None
    return None if line is None else line[:20_000]


@router.get("/api/data/image")
def api_image(path: str = "", home: StudioHome = Depends(get_home)) -> FileResponse:
    file = home.confine(path, field="path", must_exist=True)
    if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
        raise StudioError(f"{path}: not an image file", "the image route serves image files only", field="path")
    return FileResponse(file, media_type=mimetypes.guess_type(file.name)[0] or "application/octet-stream")


# ------------------------------------------------------------------------------------------ stats
@router.get("/api/data/stats")
def api_stats(path: str = "", model: str = "", format: str = "auto", image_root: str | None = None,
              home: StudioHome = Depends(get_home)) -> dict:
    from vlmdpo.studio.data_stats import data_page_stats

    source = _source(home, path)
    model = model.strip()
    if model and home.looks_local(model):
        model = str(home.confine(model, field="model", must_exist=True))
    try:
        return data_page_stats(source, model=model or None, **_load_kwargs(format, image_root, home))
    except FixableError as e:
        raise StudioError(e.message, e.fix, field="model" if model else "path") from None
    except (DataError, ValueError, OSError) as e:
        raise _library_error(e) from None


# ------------------------------------------------------------------------------------------- page
@router.get("/data", response_class=HTMLResponse, include_in_schema=False)
def page() -> HTMLResponse:
    from vlmdpo.data.formats import FORMAT_NAMES

    formats = "".join(f"<option>{name}</option>" for name in ("auto", *FORMAT_NAMES))
    body = (
        "<section class=card><h2>Choose data</h2><form id=pick class=row autocomplete=off>"
        "<label class='field grow'><span class=key>path</span><input name=path placeholder='a .jsonl / .json / "
        ".parquet file or a folder'><span class=field-error></span></label>"
        f"<label class=field><span class=key>format</span><select name=format>{formats}</select></label>"
        "<button type=submit class=primary id=check>Check</button></form>"
        "<div id=browser class=browser></div>"
        "<form id=upload class=row><label class='field grow'><span class=key>or upload</span>"
        "<input type=file name=files multiple accept='.jsonl,.json,.parquet,.zip,image/*'>"
        "<span class=field-error></span></label><label class=field><span class=key>into uploads/</span>"
        "<input name=name placeholder=my-data><span class=field-error></span></label>"
        "<button type=submit id=upload-btn>Upload</button></form><div id=errors></div></section>"
        "<section class=card><h2>Check</h2><div id=check-result class=muted>Choose data and press Check."
        "</div></section>"
        "<section class=card><h2>Pairs</h2><div class=row><button id=prev type=button>‹ prev</button>"
        "<span id=page-label class=muted></span><button id=next type=button>next ›</button></div>"
        "<div id=pairs></div></section>"
        "<section class=card><h2>Stats</h2><form id=stats-form class=row autocomplete=off>"
        "<label class='field grow'><span class=key>model for token counts (optional)</span>"
        "<input name=model placeholder='tiny:idefics3, builtin:nano-smolvlm or a local model folder'>"
        "<span class=field-error></span></label><button type=submit id=stats-btn>Compute stats</button></form>"
        "<div id=stats></div><div id=hists class=charts></div></section>")
    return render("Data", body, active="/data", scripts=("vendor/uplot/uPlot.iife.min.js", "data.js"))
