"""Files that appear whole or not at all: written under a temporary name in the same folder,
flushed to disk, then renamed into place (os.replace), so a kill never leaves a partial file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def sync_tree(folder: Path) -> None:
    """Flush every file under `folder` (written by a library that does not fsync) before it is renamed."""
    for p in Path(folder).rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def move_files_in(src: Path, dst: Path) -> list[Path]:
    """Move every file of `src` into `dst` (same file system), each by one atomic rename; files of
    `dst` with other names stay. Returns the moved files' new paths."""
    src, dst = Path(src), Path(dst)
    sync_tree(src)
    moved = []
    for p in sorted(q for q in src.rglob("*") if q.is_file()):
        target = dst / p.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, target)
        moved.append(target)
    return moved
