"""The studio's home folder: its SQLite database, uploads, and the roots the browser may name paths in.

Every path a browser sends goes through `StudioHome.confine`, so no request reaches a file outside the
allowed roots (the home folder itself and the roots given with `--root`; `..` and symlinks resolved
first). The schema lives here, in one place; each page module reads and writes its own tables.
"""
from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from vlmdpo.studio.errors import StudioError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    output_dir TEXT NOT NULL,
    config_path TEXT NOT NULL,
    pid INTEGER,
    status TEXT NOT NULL,          -- starting | running | stopping | stopped | finished | failed
    created REAL NOT NULL,
    updated REAL NOT NULL,
    message TEXT
);
CREATE TABLE IF NOT EXISTS servers (  -- `vlmdpo serve` processes: the lab's worker and deployed endpoints
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,            -- lab | deploy
    models TEXT NOT NULL,          -- JSON [[name, source], ...] as passed to --model NAME=SOURCE
    port INTEGER NOT NULL,
    pid INTEGER,
    status TEXT NOT NULL,          -- starting | running | stopped | failed
    log_path TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    message TEXT
);
CREATE TABLE IF NOT EXISTS exports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,          -- the run folder (or model folder) exported
    mode TEXT NOT NULL,            -- merged | adapter
    output_dir TEXT NOT NULL,
    pid INTEGER,
    status TEXT NOT NULL,          -- running | finished | failed
    log_path TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    message TEXT
);
CREATE TABLE IF NOT EXISTS label_sessions (  -- bookkeeping only: a queue's state is its labels file
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    candidates TEXT NOT NULL,
    labels TEXT NOT NULL,
    pairs TEXT NOT NULL,
    labeler TEXT NOT NULL,
    total INTEGER NOT NULL,
    done INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE(candidates, labels)
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def default_home() -> Path:
    base = os.environ.get("VLMDPO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vlmdpo")
    return Path(base) / "studio"


@dataclass
class StudioHome:
    root: Path
    extra_roots: tuple[Path, ...] = ()
    max_upload_mb: float = 512.0

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser().resolve()
        self.extra_roots = tuple(Path(r).expanduser().resolve() for r in self.extra_roots)
        for sub in ("uploads", "runs", "labels", "exports", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        with self.db() as con:
            con.executescript(SCHEMA)

    @property
    def roots(self) -> tuple[Path, ...]:
        return (self.root, *self.extra_roots)

    @property
    def db_path(self) -> Path:
        return self.root / "studio.sqlite"

    @contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        """One connection per use: the server's threads never share one, and each `with` is one transaction."""
        con = sqlite3.connect(self.db_path, timeout=30)
        con.row_factory = sqlite3.Row
        try:
            with con:
                yield con
        finally:
            con.close()

    def confine(self, path: str | os.PathLike, *, field: str, must_exist: bool = False) -> Path:
        """`path` resolved (relative to the home folder) and checked to lie inside an allowed root."""
        if path is None or str(path).strip() == "":
            raise StudioError("no path given", "enter a path", field=field)
        raw = Path(str(path)).expanduser()
        resolved = (raw if raw.is_absolute() else self.root / raw).resolve()
        if not any(resolved == r or r in resolved.parents for r in self.roots):
            allowed = ", ".join(str(r) for r in self.roots)
            raise StudioError(f"{path}: outside the folders the studio may use",
                              f"use a path under {allowed}, or restart the studio with --root DIR", field=field,
                              status=403)
        if must_exist and not resolved.exists():
            raise StudioError(f"{path}: no such file or folder", "check the path", field=field, status=404)
        return resolved

    def looks_local(self, value: str) -> bool:
        """Whether a name the browser sent is meant as a path here (else a hub id such as owner/name)."""
        p = Path(value).expanduser()
        return p.is_absolute() or value.startswith((".", "~")) or (self.root / p).exists()

    def setting(self, key: str, default: str | None = None) -> str | None:
        with self.db() as con:
            row = con.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def set_setting(self, key: str, value: str) -> None:
        with self.db() as con:
            con.execute("INSERT INTO settings(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, value))
