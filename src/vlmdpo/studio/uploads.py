"""Uploads into the studio home: data files and images, or a zip of them, written whole or not at all.

The request body is counted while it streams in (the limit holds before anything is parsed further);
files land in a hidden staging folder under uploads/, a zip is extracted member by member with every
name checked to stay inside it, and only a complete upload is renamed to uploads/<name>/.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import AsyncIterator

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from vlmdpo.studio.errors import StudioError
from vlmdpo.studio.home import StudioHome

ALLOWED = {".jsonl", ".json", ".parquet", ".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff",
           ".mp4", ".webm", ".mov", ".mkv", ".zip", ".yaml", ".yml", ".txt", ".md", ".arrow"}
COPY_CHUNK = 1 << 20


def _limit(home: StudioHome) -> int:
    return int(home.max_upload_mb * (1 << 20))


def _too_big(home: StudioHome) -> StudioError:
    return StudioError(f"the upload is larger than the limit of {home.max_upload_mb:g} MB",
                       "upload fewer files at once, or restart the studio with --max-upload-mb", field="files",
                       status=413)


async def _counted(request: Request, limit: int, home: StudioHome) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _too_big(home)
        yield chunk


def safe_relpath(name: str, *, field: str = "files") -> PurePosixPath:
    """A member name as a relative path that cannot leave its folder (no absolute paths, no '..')."""
    text = name.replace("\\", "/")
    path = PurePosixPath(text)
    if not text or path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise StudioError(f"'{name}': a file name that points outside the upload", "rename the file (no '..', no "
                          "absolute paths) and upload again", field=field)
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts:
        raise StudioError(f"'{name}': not a file name", "upload files with names", field=field)
    return PurePosixPath(*parts)


def _check_kind(rel: PurePosixPath) -> None:
    if rel.suffix.lower() not in ALLOWED:
        raise StudioError(f"'{rel}': a {rel.suffix or 'suffix-less'} file is not preference data or an image",
                          "upload .jsonl / .json / .parquet data, images, or a .zip of them", field="files")


def _extract(zip_path: Path, dest: Path, budget: int, home: StudioHome) -> int:
    """Members of `zip_path` under `dest`; the bytes written (counted as they are, not as the zip claims)."""
    written = 0
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                if info.is_dir() or info.filename.startswith("__MACOSX/"):
                    continue
                rel = safe_relpath(info.filename)
                _check_kind(rel)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise StudioError(f"'{info.filename}' in the zip is a symbolic link", "zip the files themselves",
                                      field="files")
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "xb") as out:
                    while chunk := src.read(COPY_CHUNK):
                        written += len(chunk)
                        if written > budget:
                            raise _too_big(home)
                        out.write(chunk)
    except zipfile.BadZipFile as e:
        raise StudioError(f"'{zip_path.name}': not a readable zip ({e})", "zip the files again",
                          field="files") from None
    return written


def _folder_name(name: str) -> str:
    text = name.strip()
    if not text or text.startswith(".") or any(c in text for c in "/\\:") or len(text) > 80:
        raise StudioError(f"'{name}': not a folder name", "use letters, digits, '-', '_' or '.' (not first)",
                          field="name")
    return text


async def receive_upload(request: Request, home: StudioHome, name: str) -> Path:
    """Parse the multipart body (field `files`, repeated) into uploads/<name>/ and return that folder."""
    folder = _folder_name(name)
    final = home.root / "uploads" / folder
    if final.exists():
        raise StudioError(f"uploads/{folder} exists", "choose another name", field="name", status=409)
    limit = _limit(home)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise _too_big(home)
    parser = MultiPartParser(request.headers, _counted(request, limit, home), max_files=10_000, max_fields=10)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise StudioError(f"not a file upload ({e.message})", "send the files as multipart/form-data field 'files'",
                          field="files") from None
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    try:
        if not files:
            raise StudioError("no files in the upload", "choose one or more files", field="files")
        stage = Path(tempfile.mkdtemp(prefix=".upload-", dir=home.root / "uploads"))
        try:
            written = 0
            for f in files:
                rel = safe_relpath(f.filename or "")
                _check_kind(rel)
                target = stage / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "xb") as out:
                    shutil.copyfileobj(f.file, out, COPY_CHUNK)
                written += target.stat().st_size
                if rel.suffix.lower() == ".zip":
                    written += _extract(target, stage / rel.parent, limit - written, home)
                    target.unlink()
            for path in stage.rglob("*"):
                if path.is_file():
                    with open(path, "rb") as fh:
                        os.fsync(fh.fileno())
            os.replace(stage, final)  # the whole upload appears at once
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    finally:
        for f in files:
            await f.close()
    return final
