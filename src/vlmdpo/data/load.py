"""Load preference data from any supported source into validated PreferenceRecords.

`iter_preferences` streams (constant memory): for each source file it fixes the format (the
explicit one, the file's dataset_info.json entry, or detection from its first readable rows),
reads each row with that format's reader, validates the record, and yields the record or the
row's RowErrors. `load_preferences` collects the stream and, with on_invalid="error", raises
one DataError listing every problem.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterator

from vlmdpo.data.formats import READERS, RowContext, RowProblem, canonical_format_name
from vlmdpo.data.formats.detect import detect_format, detection_note, explain_unknown
from vlmdpo.data.sources import BadRow, SourceFile, open_sources
from vlmdpo.data.validate import DataError, ImageChecker, validate_record
from vlmdpo.types import PreferenceRecord, RowError

log = logging.getLogger("vlmdpo.data")

ON_INVALID = ("error", "skip")
_LF_FORMATS = ("sharegpt", "alpaca")

__all__ = ["DataError", "LoadResult", "PreferenceStream", "iter_preferences", "load_preferences"]


@dataclass
class LoadResult:
    records: list[PreferenceRecord]
    errors: list[RowError]
    formats: dict[str, str]  # file label -> format read
    n_read: int
    n_kept: int
    n_skipped: int
    notes: list[str] = field(default_factory=list)  # e.g. "x.jsonl: format detected as swift (keys ...)"

    def summary(self) -> str:
        return f"read {self.n_read}, kept {self.n_kept}, skipped {self.n_skipped}"


class PreferenceStream:
    """Iterator of PreferenceRecord | RowError; the counts and chosen formats fill in as it runs.

    Row errors are yielded, never raised (the caller decides); a source that cannot be opened
    raises DataError. With on_invalid="skip" and rejected_rows_path, each rejected row is also
    written there as one JSON line.
    """

    def __init__(self, source: Any, *, format: str = "auto", image_root: str | Path | None = None,
                 allow_remote_images: bool = False, on_invalid: str = "error",
                 rejected_rows_path: str | Path | None = None, check_images: str = "header",
                 dataset_info: Any = None, split: str = "train", image_path_map: dict[str, str] | None = None,
                 dataset_dir: str | Path | None = None, max_samples: int | None = None):
        if on_invalid not in ON_INVALID:
            raise ValueError(f"on_invalid must be one of {ON_INVALID}, got {on_invalid!r}")
        self.format = canonical_format_name(format)
        self.image_root = Path(image_root).expanduser().resolve() if image_root else None
        self.allow_remote = allow_remote_images
        self.path_map = dict(image_path_map or {})
        self.on_invalid = on_invalid
        self.max_samples = max_samples  # rows read per data file (LLaMA-Factory's key)
        self.rejected_rows_path = Path(rejected_rows_path) if rejected_rows_path else None
        self.checker = ImageChecker(check_images, allow_remote=allow_remote_images)
        self.sources: list[SourceFile] = open_sources(source, split=split, dataset_info=dataset_info,
                                                     dataset_dir=dataset_dir)
        self.formats: dict[str, str] = {}
        self.notes: list[str] = []
        self.n_read = self.n_kept = self.n_skipped = 0
        self._gen = self._generate()

    def __iter__(self) -> PreferenceStream:
        return self

    def __next__(self) -> PreferenceRecord | RowError:
        return next(self._gen)

    def _generate(self) -> Iterator[PreferenceRecord | RowError]:
        out = None
        if self.on_invalid == "skip" and self.rejected_rows_path is not None:
            self.rejected_rows_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.rejected_rows_path, "w", encoding="utf-8")
        try:
            for src in self.sources:
                yield from self._read_source(src, out)
        finally:
            if out is not None:
                out.close()

    def _read_source(self, src: SourceFile, out: Any) -> Iterator[PreferenceRecord | RowError]:
        from vlmdpo.data.images import resolve_image

        ctx = RowContext(file=src.label, stem=src.stem, base_dir=src.base_dir, image_root=self.image_root,
                         allow_remote=self.allow_remote, spec=src.spec)
        ctx.resolver = partial(resolve_image, base_dir=src.base_dir, image_root=self.image_root,
                               allow_remote=self.allow_remote, path_map=self.path_map)
        fmt = self._fixed_format(src)
        for rowno, row in src.rows():
            if self.max_samples is not None and rowno > self.max_samples:
                break
            self.n_read += 1
            if isinstance(row, BadRow):
                yield from self._reject([row.error], row.raw, out)
                continue
            if fmt is None:
                found = self._detect(src, row)
                if found is None:
                    err = RowError("unknown_format", src.label, rowno, "<row>", explain_unknown(row),
                                   "name the format explicitly (format: ...) or rename the columns")
                    yield from self._reject([err], row, out)
                    continue
                fmt = found
            ctx.row = rowno
            reader = READERS[fmt]
            try:
                record = reader.read_row(row, ctx)
            except RowProblem as p:
                yield from self._reject([RowError(p.kind, src.label, rowno, p.field,
                                                  self._hint(p, row, fmt, src), p.fix)], row, out)
                continue
            except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
                # an odd value our readers did not foresee: report it on the row, don't crash the load
                err = RowError("bad_row", src.label, rowno, "<row>",
                               f"could not read this row as {fmt}: {type(exc).__name__}: {exc}",
                               "compare the row with the format's documented layout (FORMATS.md)")
                yield from self._reject([err], row, out)
                continue
            errors = validate_record(record, fields=reader.field_names(ctx), image_checker=self.checker)
            if errors:
                yield from self._reject(errors, row, out)
                continue
            self.n_kept += 1
            yield record

    def _fixed_format(self, src: SourceFile) -> str | None:
        """The format set by the caller or by dataset_info.json; None means detect from rows."""
        if self.format not in ("auto", "llamafactory"):
            self.formats[src.label] = self.format
            return self.format
        if src.spec is not None:
            self.formats[src.label] = src.spec.formatting
            self._note(detection_note(src.label, src.spec.formatting, (), src.spec.origin))
            if not src.spec.ranking:
                self._note(f"{src.label}: {src.spec.origin} lacks \"ranking\": true (LLaMA-Factory would treat it "
                           "as SFT data); reading it as preference pairs anyway")
            return src.spec.formatting
        return None

    def _detect(self, src: SourceFile, row: dict) -> str | None:
        found = detect_format(row)
        if self.format == "llamafactory":  # the caller said sharegpt-or-alpaca: choose between those
            name = "sharegpt" if ("conversations" in row or "messages" in row) else "alpaca"
            found = (name, ("conversations" if "conversations" in row else "messages",) if name == "sharegpt"
                     else ("instruction",))
        if found is None:
            return None
        self.formats[src.label] = found[0]
        self._note(detection_note(src.label, found[0], found[1]))
        return found[0]

    def _note(self, text: str) -> None:
        self.notes.append(text)
        log.info(text)

    def _hint(self, p: RowProblem, row: dict, fmt: str, src: SourceFile) -> str:
        if p.kind != "missing_field" or self.format != "auto":
            return p.message
        other = detect_format(row)
        if other is not None and other[0] != fmt:
            return (f"{p.message}; this row looks like {other[0]} but {src.label} was read as {fmt} "
                    "(decided from its first rows; use one format per file)")
        return p.message

    def _reject(self, errors: list[RowError], raw: Any, out: Any) -> Iterator[RowError]:
        self.n_skipped += 1
        if out is not None:
            first = errors[0]
            entry = {"file": first.file, "row": first.row, "kind": first.kind, "field": first.field,
                     "message": first.message, "fix": first.fix}
            if len(errors) > 1:
                entry["other_errors"] = [{"kind": e.kind, "field": e.field, "message": e.message, "fix": e.fix}
                                         for e in errors[1:]]
            entry["raw"] = raw
            out.write(json.dumps(entry, ensure_ascii=False, default=_jsonable) + "\n")
        yield from errors


def _jsonable(value: Any) -> Any:
    """What rejected_rows.jsonl writes for values JSON cannot hold (image bytes, PIL images)."""
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if hasattr(value, "size") and hasattr(value, "mode"):
        return f"<PIL image {value.size[0]}x{value.size[1]} {value.mode}>"
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def iter_preferences(source: Any, *, format: str = "auto", image_root: str | Path | None = None,
                     allow_remote_images: bool = False, on_invalid: str = "error",
                     rejected_rows_path: str | Path | None = None, check_images: str = "header",
                     dataset_info: Any = None, split: str = "train",
                     image_path_map: dict[str, str] | None = None, dataset_dir: str | Path | None = None,
                     max_samples: int | None = None) -> PreferenceStream:
    """Stream records and row errors; see PreferenceStream."""
    return PreferenceStream(source, format=format, image_root=image_root, allow_remote_images=allow_remote_images,
                            on_invalid=on_invalid, rejected_rows_path=rejected_rows_path,
                            check_images=check_images, dataset_info=dataset_info, split=split,
                            image_path_map=image_path_map, dataset_dir=dataset_dir, max_samples=max_samples)


def load_preferences(source: Any, *, on_invalid: str = "error", max_errors: int = 50, **options: Any) -> LoadResult:
    """Every valid record of `source` (`options` as for iter_preferences). With on_invalid="error" any
    invalid row raises DataError (all rows are still read so every problem is listed; `max_errors`
    caps how many are printed)."""
    stream = iter_preferences(source, on_invalid=on_invalid, **options)
    records: list[PreferenceRecord] = []
    errors: list[RowError] = []
    for item in stream:
        (errors if isinstance(item, RowError) else records).append(item)
    result = LoadResult(records, errors, stream.formats, stream.n_read, stream.n_kept, stream.n_skipped,
                        stream.notes)
    if errors and on_invalid == "error":
        header = (f"{result.n_skipped} of {result.n_read} rows are invalid ({result.summary()}). "
                  "Fix them, or set on_invalid: skip to train on the rest:")
        exc = DataError(errors, max_listed=max_errors, header=header)
        exc.result = result
        raise exc
    return result
