"""Where rows come from: files, directories, parquet, save_to_disk folders, the hub, memory.

`open_sources(...)` turns what the user gave into `SourceFile`s; each streams `(row_number,
row)` pairs lazily (1-based; for .jsonl the line number), where a row that cannot even be
parsed arrives as a `BadRow`. Nothing here decodes images: datasets tables are read in arrow
format, so Image columns come through as {"bytes", "path"} dicts. A source that cannot be
opened at all raises DataError (kind "source", row 0).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from vlmdpo.data.formats.llamafactory import Spec, entry_for_file, load_dataset_info, parse_entry
from vlmdpo.data.validate import DataError
from vlmdpo.types import RowError

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
INFO_NAME = "dataset_info.json"
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_BATCH = 512


@dataclass
class BadRow:
    """A row that could not be parsed; `raw` is what the file held (for rejected_rows.jsonl)."""

    error: RowError
    raw: Any = None


@dataclass
class SourceFile:
    label: str  # how errors name it: the path as given, or "<rows>" / "<dataset>" / "hub:name"
    stem: str  # default record ids are f"{stem}-{row}"
    base_dir: Path | None  # relative image paths resolve here (unless image_root is set)
    rows: Callable[[], Iterator[tuple[int, Any]]]
    spec: Spec | None = None  # LLaMA-Factory dataset_info entry for this file


def open_sources(source: Any, *, split: str = "train", dataset_info: Any = None,
                 dataset_dir: str | os.PathLike | None = None) -> list[SourceFile]:
    """`dataset_dir`: a name that is no file or folder is looked up in its dataset_info.json, as
    LLaMA-Factory does (its "ONLINE" means the hub)."""
    info = _explicit_info(dataset_info)
    if _is_dataset(source):
        return [_dataset_source(source, "<dataset>", "dataset", split, info)]
    if isinstance(source, (list, tuple)):
        if not source:
            raise _source_error("<list>", "the list of sources/rows is empty", "pass at least one file or row")
        if all(isinstance(item, Mapping) for item in source):
            rows = list(source)
            return [SourceFile("<rows>", "rows", None, lambda: enumerate(rows, 1), _spec_for(info, "<rows>"))]
        out: list[SourceFile] = []
        for item in source:
            out.extend(open_sources(item, split=split, dataset_info=dataset_info, dataset_dir=dataset_dir))
        return out
    if isinstance(source, (str, os.PathLike)):
        registry = _registry(str(source), dataset_dir)
        if registry is not None:
            return named_sources(str(source), *registry, split=split)
        return _path_sources(str(source), split, info)
    raise _source_error(repr(source)[:60], f"cannot read data from a {type(source).__name__}",
                        "pass a file or folder path, a hub dataset name, a list of row dicts or a datasets.Dataset")


def _source_error(label: str, message: str, fix: str) -> DataError:
    return DataError([RowError("source", label, 0, "dataset", message, fix)], header="cannot read the data:")


def _explicit_info(dataset_info: Any) -> tuple[Mapping, str] | None:
    if dataset_info is None:
        return None
    if isinstance(dataset_info, Mapping):
        return dataset_info, "dataset_info"
    path = Path(dataset_info)
    try:
        return load_dataset_info(path), str(path)
    except ValueError as exc:
        raise _source_error(str(path), str(exc), "pass a readable dataset_info.json") from None


def _spec_for(info: tuple[Mapping, str] | None, rel_name: str) -> Spec | None:
    if info is None:
        return None
    try:
        return entry_for_file(info[0], rel_name, info[1])
    except ValueError as exc:
        raise _source_error(info[1], str(exc), "fix the dataset_info.json entry (see LLaMA-Factory's data/README)"
                            ) from None


def _path_sources(text: str, split: str, info: tuple[Mapping, str] | None) -> list[SourceFile]:
    path = Path(text)
    if path.is_dir():
        if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            return [_disk_source(path, text, split, info)]
        return _dir_sources(path, text, info)
    if path.is_file():
        if path.suffix.lower() not in DATA_SUFFIXES:
            raise _source_error(text, f"unsupported file type {path.suffix!r}",
                                "use .jsonl, .json or .parquet (or a folder of them)")
        if info is None:
            info = _info_beside(path.parent)
        return [_file_source(path, text, path.name, info)]
    if _HUB_NAME.match(text) and not text.lower().endswith(DATA_SUFFIXES):
        return [_hub_source(text, split, info)]
    raise _source_error(text, "no such file or folder", "check the path (relative paths are from the current folder)")


def _registry(name: str, dataset_dir: str | os.PathLike | None) -> tuple[Mapping, Path] | None:
    """(dataset_info, its path) when `name` is to be looked up there: not an existing path, and
    dataset_dir holds a dataset_info.json."""
    if dataset_dir is None or str(dataset_dir) == "ONLINE" or Path(name).exists():
        return None
    path = Path(dataset_dir) / INFO_NAME
    if not path.is_file():
        return None
    try:
        return load_dataset_info(path), path
    except ValueError as exc:
        raise _source_error(str(path), str(exc), "fix that dataset_info.json") from None


def named_sources(name: str, info: Mapping, info_path: Path, *, split: str = "train") -> list[SourceFile]:
    """The sources of dataset_info.json's entry `name`: its file or folder under dataset_dir (images
    resolve against dataset_dir, LLaMA-Factory's media_dir default), or its hf_hub_url."""
    entry = info.get(name)
    if not isinstance(entry, Mapping):
        names = ", ".join(sorted(info)) or "none"
        raise _source_error(name, f"not a file or folder, and not a dataset registered in {info_path} "
                            f"(registered: {names})",
                            f"name a registered dataset, give a file or folder path, or set dataset_dir: ONLINE "
                            "to load it from the hub")
    origin = f"{info_path} entry {name!r}"
    try:
        spec = parse_entry(entry, origin)
    except ValueError as exc:
        raise _source_error(str(info_path), str(exc), "fix the entry (see LLaMA-Factory's data/README)") from None
    if not entry.get("ranking"):
        raise _source_error(name, f"{origin} is not preference data (it lacks \"ranking\": true: an SFT dataset)",
                            "name an entry with chosen/rejected answers and \"ranking\": true")
    if entry.get("hf_hub_url"):
        src = _hub_source(str(entry["hf_hub_url"]), str(entry.get("split", split)), None)
        return [replace(src, spec=spec)]
    if not entry.get("file_name"):
        raise _source_error(name, f"{origin} has no file_name or hf_hub_url (other sources are not supported)",
                            "download the data and set file_name to it")
    root = info_path.parent
    path = root / str(entry["file_name"])
    if not path.exists():
        raise _source_error(name, f"{origin}: file_name {path} does not exist", "fix file_name or add the file")
    found = _path_sources(str(path), split, None)
    return [replace(src, spec=spec, base_dir=root.resolve()) for src in found]


def _info_beside(folder: Path) -> tuple[Mapping, str] | None:
    candidate = folder / INFO_NAME
    if not candidate.is_file():
        return None
    try:
        return load_dataset_info(candidate), str(candidate)
    except ValueError as exc:
        raise _source_error(str(candidate), str(exc), "fix or remove that dataset_info.json") from None


def _dir_sources(path: Path, text: str, info: tuple[Mapping, str] | None) -> list[SourceFile]:
    if info is None:
        info = _info_beside(path)
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in DATA_SUFFIXES and p.name != INFO_NAME
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise _source_error(text, "the folder holds no .jsonl, .json or .parquet files",
                            "point to the data file itself, or put the data files in this folder")
    return [_file_source(p, os.path.join(text, p.relative_to(path).as_posix()), p.relative_to(path).as_posix(), info)
            for p in files]


def _file_source(path: Path, label: str, rel_name: str, info: tuple[Mapping, str] | None) -> SourceFile:
    suffix = path.suffix.lower()
    reader = {".jsonl": _jsonl_rows, ".json": _json_rows, ".parquet": _parquet_rows}[suffix]
    return SourceFile(label, path.stem, path.parent.resolve(), lambda: reader(path, label),
                      _spec_for(info, rel_name))


def _loads(line: bytes) -> Any:
    # Without the trailing newline, an unclosed object is reported at its real column, not "line 2 column 1".
    return json.loads(line.rstrip())


def _jsonl_rows(path: Path, label: str) -> Iterator[tuple[int, Any]]:
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise _source_error(label, f"cannot open: {exc.strerror}", "check the file's permissions") from None
    with handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = _loads(line)
            except ValueError as exc:  # JSONDecodeError and bad UTF-8 alike
                yield lineno, BadRow(_json_error(exc, label, lineno), line.decode("utf-8", "replace").rstrip("\n"))
                continue
            yield lineno, _as_row(value, label, lineno)


def _json_error(exc: ValueError, label: str, lineno: int) -> RowError:
    if isinstance(exc, UnicodeDecodeError):
        return RowError("invalid_json", label, lineno, "<line>",
                        f"line {lineno} is not valid UTF-8 (byte {exc.object[exc.start]:#04x} at column {exc.start + 1})",
                        "save the file as UTF-8")
    detail = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
    return RowError("invalid_json", label, lineno, "<line>", f"line {lineno} is not valid JSON: {detail}",
                    "fix the JSON on that line; each line must be one complete JSON object")


def _as_row(value: Any, label: str, row: int) -> Any:
    if type(value) is dict or isinstance(value, Mapping):
        return value
    return BadRow(RowError("not_object", label, row, "<row>",
                           f"a row must be a JSON object, got {type(value).__name__}",
                           'write each row as {"prompt": ..., "chosen": ..., "rejected": ...}'), value)


def _json_rows(path: Path, label: str) -> Iterator[tuple[int, Any]]:
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise _source_error(label, f"cannot read: {exc.strerror}", "check the file's permissions") from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # one object per line in a .json file: read it as JSON Lines
            yield from _jsonl_rows(path, label)
            return
        raise _source_error(label, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                            "fix the JSON syntax there") from None
    except ValueError as exc:
        raise _source_error(label, f"not valid JSON: {exc}", "save the file as UTF-8 JSON") from None
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise _source_error(label, f"expected a list of rows (or {{\"data\": [...]}}), got {type(data).__name__}",
                            "wrap the rows in a JSON list, or save them as .jsonl")
    for i, value in enumerate(data, 1):
        yield i, _as_row(value, label, i)


def _parquet_rows(path: Path, label: str) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        pfile = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise _source_error(label, f"cannot read parquet: {exc}", "re-export the file as parquet") from None
    row = 0
    for batch in pfile.iter_batches(batch_size=_BATCH):
        for value in batch.to_pylist():
            row += 1
            yield row, value


def _is_dataset(obj: Any) -> bool:
    return type(obj).__module__.startswith("datasets") and hasattr(obj, "with_format")


def _dataset_source(ds: Any, label: str, stem: str, split: str, info: tuple[Mapping, str] | None,
                    base_dir: Path | None = None) -> SourceFile:
    if type(ds).__name__ in ("DatasetDict", "IterableDatasetDict"):
        if split not in ds:
            raise _source_error(label, f"no split {split!r}; splits are {sorted(ds.keys())}",
                                "set split to one of those")
        ds = ds[split]
    if not hasattr(ds, "with_format") or type(ds).__name__.startswith("Iterable"):
        raise _source_error(label, "streaming (iterable) datasets are not supported", "load it without streaming")

    def rows() -> Iterator[tuple[int, Any]]:
        row = 0
        # arrow format: no Image decoding, images stay {"bytes", "path"} dicts
        for table in ds.with_format("arrow").iter(batch_size=_BATCH):
            for value in table.to_pylist():
                row += 1
                yield row, value

    return SourceFile(label, stem, base_dir, rows, _spec_for(info, label))


def _disk_source(path: Path, text: str, split: str, info: tuple[Mapping, str] | None) -> SourceFile:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, arrow errors...
        raise _source_error(text, f"cannot load the saved dataset: {exc}",
                            "pass a folder written by Dataset.save_to_disk") from None
    return _dataset_source(ds, text, path.name, split, info, base_dir=path.resolve())


def _hub_source(name: str, split: str, info: tuple[Mapping, str] | None) -> SourceFile:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # network, auth, missing split, missing dataset: all end up here
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise _source_error(
            name, f"not a local file or folder, and loading it from the Hugging Face hub failed: {reason}",
            "check the path; for a hub dataset check its name, split, network access and HF_TOKEN") from None
    return _dataset_source(ds, f"hub:{name}", name.replace("/", "_"), split, info)
