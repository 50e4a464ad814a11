"""Write PreferenceRecords as TRL, ms-swift or LLaMA-Factory JSONL, with their images copied
into an `images/` folder beside the file, so that reading the output back gives the same
records (`canonical` is the comparison form).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from vlmdpo.data.images import image_digest, load_image
from vlmdpo.types import ImageRef, Message, PreferenceRecord
from vlmdpo.errors import FixableError

TARGETS = ("trl", "swift", "llamafactory")
PLACEHOLDERS = {"image": "<image>", "video": "<video>"}
_PIL_EXT = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tiff"}
LLAMAFACTORY_COLUMNS = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "images": "images",
                        "videos": "videos"}
LLAMAFACTORY_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                     "assistant_tag": "gpt", "system_tag": "system"}
_LF_ROLE = {"system": "system", "user": "human", "assistant": "gpt"}


class ConvertError(FixableError):
    """A record cannot be written in the target format; names the record and what does not fit."""


# ------------------------------------------------------------------------------------- canonical
def canonical(record: PreferenceRecord, *, allow_remote: bool = False) -> dict[str, Any]:
    """The comparison form of a record: what a model would see, independent of the file format.

    Adjacent text parts are joined (chat templates concatenate them with nothing between),
    empty text parts dropped, images compared by decoded pixels, meta through JSON.
    """
    def digests(refs: list[ImageRef] | None) -> list[str] | None:
        return None if refs is None else [_image_key(r, allow_remote) for r in refs]

    return {
        "id": record.id,
        "prompt": [_canonical_message(m) for m in record.prompt],
        "chosen": [_canonical_message(m) for m in record.chosen],
        "rejected": [_canonical_message(m) for m in record.rejected],
        "images": digests(record.images),
        "rejected_images": digests(record.rejected_images),
        "videos": [_file_key(v) for v in record.videos],
        "meta": json.loads(json.dumps(record.meta, sort_keys=True, ensure_ascii=False, default=repr)),
    }


def _canonical_message(message: Message) -> dict[str, Any]:
    content = message.get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    out: list[dict[str, Any]] = []
    for part in parts:
        kind = part.get("type", "text")
        if kind == "text":
            text = part.get("text")
            if not text:
                continue
            if out and out[-1]["type"] == "text":
                out[-1] = {"type": "text", "text": out[-1]["text"] + text}
            else:
                out.append({"type": "text", "text": text})
        else:
            out.append({"type": kind})
    return {"role": message.get("role"), "content": out}


def _image_key(ref: ImageRef, allow_remote: bool) -> str:
    if ref.url is not None and not allow_remote:
        return f"url:{ref.url}"
    return image_digest(ref, allow_remote=allow_remote)


def _file_key(ref: ImageRef) -> str:
    if ref.url is not None:
        return f"url:{ref.url}"
    return hashlib.sha256(ref.data if ref.data is not None else Path(ref.path or "").read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------- convert
def convert(records: Iterable[PreferenceRecord], out_path: str | os.PathLike, to: str = "trl", *,
            progress: bool = False) -> Path:
    """Write `records` to `out_path` (a .jsonl file, or a folder that gets prefs.jsonl) in format `to`.

    Images go to `images/` beside the file, named by content hash; remote URLs stay URLs.
    LLaMA-Factory output also gets a dataset_info.json entry (ranking: true). Returns the JSONL path.
    """
    if to not in TARGETS:
        raise ConvertError(f"unknown target format '{to}'", f"use one of: {', '.join(TARGETS)}")
    out = Path(out_path)
    if out.is_dir() or not out.suffix:
        out = out / "prefs.jsonl"
    elif out.suffix != ".jsonl":
        raise ConvertError(f"output '{out}' must be a .jsonl file (or a folder)", "name the output like out/prefs.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    store = _MediaStore(out.parent)
    write_row = {"trl": _trl_row, "swift": _swift_row, "llamafactory": _llamafactory_row}[to]
    tmp = out.with_name(out.name + ".tmp")
    items = records
    if progress:
        from tqdm import tqdm
        items = tqdm(records, desc=f"convert to {to}", unit="row", disable=None)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for record in items:
                row = write_row(record, store)
                fh.write(_dumps(row, record) + "\n")
        os.replace(tmp, out)
    except BaseException:
        store.remove_created()  # a failed conversion leaves nothing behind
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    if to == "llamafactory":
        _register_llamafactory(out)
    return out


def convert_source(source: Any, out_path: str | os.PathLike, to: str = "trl", *, progress: bool = False,
                   **load_kwargs: Any) -> Path:
    """Stream `source` into `convert`. Every row must be valid: after the first invalid row
    nothing more is written, the rest is still read so that the DataError lists every problem,
    and the partial output is removed."""
    from vlmdpo.data.load import iter_preferences
    from vlmdpo.data.validate import DataError
    from vlmdpo.types import RowError

    stream = iter_preferences(source, on_invalid="skip", **load_kwargs)
    errors: list[RowError] = []

    def valid_records() -> Iterator[PreferenceRecord]:
        for item in stream:
            if isinstance(item, RowError):
                errors.append(item)
            elif not errors:
                yield item
        if errors:
            raise DataError(errors, header=f"{stream.n_skipped} of {stream.n_read} rows are invalid; nothing was "
                            "written. Fix them (see `vlmdpo data check`) and convert again:")

    return convert(valid_records(), out_path, to, progress=progress)


def _where(record: PreferenceRecord) -> str:
    return f"row {record.source} (id {record.id})" if record.source else f"record id {record.id}"


def _dumps(row: dict, record: PreferenceRecord) -> str:
    try:
        return json.dumps(row, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ConvertError(f"{_where(record)}: meta holds a value JSON cannot store ({e})",
                           "keep meta values to strings, numbers, booleans, lists and dicts") from None


def _common(record: PreferenceRecord, store: _MediaStore, row: dict) -> dict:
    out = {"id": record.id, **row}
    if record.images:
        out["images"] = [store.put(r, record) for r in record.images]
    if record.meta:
        out["meta"] = record.meta
    return out


def _refuse(record: PreferenceRecord, to: str, what: str, fix: str) -> None:
    raise ConvertError(f"{_where(record)}: {to} cannot express {what}", fix)


def _trl_row(record: PreferenceRecord, store: _MediaStore) -> dict:
    if record.rejected_images is not None:
        _refuse(record, "TRL", "rejected_images (a different image for the rejected answer)", "convert with --to swift")
    if record.videos:
        _refuse(record, "TRL", "videos", "convert with --to swift or --to llamafactory")
    row = {"prompt": [_structured(m) for m in record.prompt], "chosen": [_structured(m) for m in record.chosen],
           "rejected": [_structured(m) for m in record.rejected]}
    return _common(record, store, row)


def _structured(message: Message) -> dict:
    content = _canonical_message(message)["content"]
    return {"role": message["role"], "content": content}


def _swift_row(record: PreferenceRecord, store: _MediaStore) -> dict:
    if len(record.chosen) != 1:
        _refuse(record, "ms-swift", f"{len(record.chosen)} chosen messages (it takes exactly one)",
                "merge the chosen answer into one assistant message")
    messages = [{"role": m["role"], "content": _flatten(m, record, "ms-swift")} for m in record.prompt]
    messages.append({"role": "assistant", "content": _flatten(record.chosen[0], record, "ms-swift")})
    rejected = [_flatten(m, record, "ms-swift") for m in record.rejected]
    row: dict[str, Any] = {"messages": messages}
    row["rejected_response"] = rejected[0] if len(rejected) == 1 else [
        {"role": "assistant", "content": text} for text in rejected]
    out = _common(record, store, row)
    if record.rejected_images is not None:
        out["rejected_images"] = [store.put(r, record) for r in record.rejected_images]
    return _with_videos(out, record, store)


def _with_videos(out: dict, record: PreferenceRecord, store: _MediaStore) -> dict:
    if record.videos:
        out["videos"] = [store.put(v, record, video=True) for v in record.videos]
    return out


def _llamafactory_row(record: PreferenceRecord, store: _MediaStore) -> dict:
    to = "LLaMA-Factory"
    if record.rejected_images is not None:
        _refuse(record, to, "rejected_images (a different image for the rejected answer)", "convert with --to swift")
    for side, messages in (("chosen", record.chosen), ("rejected", record.rejected)):
        if len(messages) != 1:
            _refuse(record, to, f"{len(messages)} {side} messages (it takes exactly one)",
                    f"merge the {side} answer into one assistant message")
    roles = [m["role"] for m in record.prompt]
    turns = roles[1:] if roles[:1] == ["system"] else roles
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]
    if turns != expected or not turns or turns[-1] != "user":
        _refuse(record, to, f"the prompt roles {roles} (sharegpt needs an optional system message, then user and "
                "assistant turns alternating, ending on user)", "convert with --to trl or --to swift")
    conversations = [{"from": _LF_ROLE[m["role"]], "value": _flatten(m, record, to)} for m in record.prompt]
    row = {"conversations": conversations,
           "chosen": {"from": "gpt", "value": _flatten(record.chosen[0], record, to)},
           "rejected": {"from": "gpt", "value": _flatten(record.rejected[0], record, to)}}
    return _with_videos(_common(record, store, row), record, store)


def _flatten(message: Message, record: PreferenceRecord, to: str) -> str:
    """One message as a string with <image>/<video> placeholders where the media sit."""
    pieces = []
    for part in _canonical_message(message)["content"]:
        if part["type"] == "text":
            for token in PLACEHOLDERS.values():
                if token in part["text"]:
                    _refuse(record, to, f"the literal text '{token}' in a {message['role']} message (it would be "
                            "read back as a placeholder)", "convert with --to trl, which keeps text and images apart")
            pieces.append(part["text"])
        elif part["type"] in PLACEHOLDERS:
            pieces.append(PLACEHOLDERS[part["type"]])
        else:
            _refuse(record, to, f"a '{part['type']}' content part", "convert with --to trl")
    return "".join(pieces)


def _register_llamafactory(out: Path) -> None:
    info_path = out.parent / "dataset_info.json"
    info: dict[str, Any] = {}
    if info_path.exists():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConvertError(f"{info_path} exists but is not valid JSON ({e})", "fix or delete it, then convert again")
    info[out.stem] = {"file_name": out.name, "formatting": "sharegpt", "ranking": True,
                      "columns": dict(LLAMAFACTORY_COLUMNS), "tags": dict(LLAMAFACTORY_TAGS)}
    info_path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------- media
class _MediaStore:
    """Copies images/videos into <out_dir>/images, named by content hash (so reruns are stable)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.folder = out_dir / "images"
        self._by_path: dict[str, str] = {}
        self._created: list[Path] = []

    def remove_created(self) -> None:
        for path in self._created:
            path.unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def put(self, ref: ImageRef, record: PreferenceRecord, *, video: bool = False) -> str:
        if ref.url is not None:
            return ref.url
        if ref.path is not None and ref.path in self._by_path:
            return self._by_path[ref.path]
        data, ext = self._encoded(ref, record, video)
        name = hashlib.sha256(data).hexdigest()[:20] + ext
        target = self.folder / name
        if not target.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            self._created.append(target)
        rel = f"images/{name}"
        if ref.path is not None:
            self._by_path[ref.path] = rel
        return rel

    @staticmethod
    def _encoded(ref: ImageRef, record: PreferenceRecord, video: bool) -> tuple[bytes, str]:
        if ref.pil is not None:
            # PNG is lossless; orientation and RGB are applied first, which is what a model sees.
            buf = io.BytesIO()
            load_image(ref).save(buf, "PNG")
            return buf.getvalue(), ".png"
        if ref.data is not None:
            return ref.data, ".mp4" if video else _sniff_ext(ref.data)
        try:
            data = Path(ref.path or "").read_bytes()
        except OSError as e:
            kind = "video" if video else "image"
            raise ConvertError(f"{_where(record)}: {kind} cannot be read: {ref.path} ({e.strerror})",
                               f"fix the {kind} path, or run `vlmdpo data check` first") from None
        ext = Path(ref.path or "").suffix.lower()
        return data, ext if ext else (".mp4" if video else _sniff_ext(data))


def _sniff_ext(data: bytes) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return _PIL_EXT.get(im.format or "", ".img")
    except Exception:  # unreadable bytes keep a neutral name; `data check` reports them
        return ".img"
