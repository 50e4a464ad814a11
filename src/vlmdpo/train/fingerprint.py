"""A run's fingerprint: the model, the data and the settings that shape its weights and schedule.

Each checkpoint stores it (`run.json`); resuming compares it with the current run, so a checkpoint
of another run is never continued by accident, and deliberate changes are listed and applied.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

from vlmdpo.config.run import FINGERPRINT_KEYS

FILE = "run.json"


def _plain(o: Any) -> Any:
    """Stable JSON for record fields: paths and strings as text, images by type and size."""
    size = getattr(o, "size", None)
    return f"{type(o).__name__}{tuple(size) if isinstance(size, (tuple, list)) else ''}"


def data_identity(records: Sequence, eval_records: Sequence) -> dict[str, Any]:
    """Pair counts and a hash of the pairs themselves (ids, texts, image references)."""
    h = hashlib.sha256()
    for recs in (records, eval_records):
        for r in recs:
            h.update(json.dumps([r.id, r.prompt, r.chosen, r.rejected, r.images, r.rejected_images,
                                 getattr(r, "videos", None)], default=_plain, sort_keys=True).encode())
        h.update(b"|")
    return {"train_pairs": len(records), "eval_pairs": len(eval_records), "hash": h.hexdigest()[:16]}


def fingerprint(cfg, data: dict[str, Any]) -> dict[str, Any]:
    return {**{k: _jsonable(getattr(cfg, k)) for k in FINGERPRINT_KEYS if k != "dataset"}, "dataset": data}


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def differences(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (checkpoint's value, this run's value)} for every key that differs."""
    keys = [k for k in now if k in saved] + [k for k in saved if k not in now] + [k for k in now if k not in saved]
    return {k: (saved.get(k), now.get(k)) for k in dict.fromkeys(keys) if saved.get(k) != now.get(k)}


def describe(diffs: dict[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{k}: {_show(old)} -> {_show(new)}" for k, (old, new) in diffs.items())


def _show(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {val}" for k, val in v.items())
    return json.dumps(v) if not isinstance(v, str) else v
