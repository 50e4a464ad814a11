"""Checks on a normalized PreferenceRecord, and the error type that lists what failed.

Readers (data/formats) only turn a raw row into a record and complain about its shape; every
rule that can be stated on the normalized record lives here, once, for all formats. Each
problem is a RowError naming file, row, field (in the source format's own terms, via
`fields`) and a fix.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable, Mapping

from vlmdpo.types import ImageRef, Message, PreferenceRecord, RowError

CHECK_IMAGE_MODES = ("none", "header", "decode")

# Normalized field name -> the name a user of the source format knows. Readers pass their own.
DEFAULT_FIELDS = {
    "prompt": "prompt",
    "chosen": "chosen",
    "rejected": "rejected",
    "images": "images",
    "rejected_images": "rejected_images",
    "videos": "videos",
}


class DataError(Exception):
    """Invalid preference data. `errors` holds every RowError; str() groups them by kind."""

    def __init__(self, errors: list[RowError], *, max_listed: int = 50, header: str | None = None):
        self.errors = list(errors)
        self.max_listed = max_listed
        self.header = header
        self.result = None  # load_preferences attaches its LoadResult (counts, formats)
        super().__init__(format_errors(self.errors, max_listed=max_listed, header=header))


def format_errors(
    errors: list[RowError], *, max_listed: int = 50, per_kind: int = 3, header: str | None = None
) -> str:
    """Errors grouped by kind: a count per kind and its first examples, at most `max_listed` lines."""
    if not errors:
        return header or "no errors"
    groups: dict[str, list[RowError]] = defaultdict(list)
    for err in errors:
        groups[err.kind].append(err)
    lines = [header or f"{len(errors)} problem(s) in {_rows(errors)}:"]
    listed = 0
    for kind, errs in groups.items():
        lines.append(f"[{kind}] {len(errs)} error(s) in {_rows(errs)}:")
        for err in errs[:per_kind]:
            if listed >= max_listed:
                break
            lines.append(f"  {err}")
            listed += 1
        if len(errs) > per_kind:
            lines.append(f"  ... and {len(errs) - per_kind} more [{kind}]")
    if listed >= max_listed and listed < len(errors):
        lines.append(f"... listing capped at {max_listed}; {len(errors)} errors in total")
    return "\n".join(lines)


def _rows(errors: list[RowError]) -> str:
    rows = len({(e.file, e.row) for e in errors if e.row})
    files = len({e.file for e in errors if not e.row})  # row 0: the file itself
    return " and ".join(x for x in (f"{rows} row(s)" if rows else "", f"{files} file(s)" if files else "") if x)


class ImageChecker:
    """check_image with a cache: many rows share the same files, and a header check is I/O."""

    def __init__(self, mode: str = "header", *, allow_remote: bool = False, check: Callable | None = None):
        if mode not in CHECK_IMAGE_MODES:
            raise ValueError(f"check_images must be one of {CHECK_IMAGE_MODES}, got {mode!r}")
        self.mode = mode
        self.allow_remote = allow_remote
        self._check = check
        self._cache: dict[Any, str | None] = {}

    def __call__(self, ref: ImageRef, *, video: bool = False) -> str | None:
        if self.mode == "none":
            return None
        key = _cache_key(ref)
        if key is not None and (video, key) in self._cache:
            return self._cache[(video, key)]
        if video:
            from vlmdpo.data.videos import check_video

            problem = check_video(ref, decode=self.mode == "decode")
        else:
            if self._check is None:
                from vlmdpo.data.images import check_image

                self._check = check_image
            problem = self._check(ref, decode=self.mode == "decode", allow_remote=self.allow_remote)
        if key is not None:
            if len(self._cache) > 500_000:  # bound memory on huge sets of unique files
                self._cache.clear()
            self._cache[(video, key)] = problem
        return problem


def _cache_key(ref: ImageRef) -> Any:
    if ref.path is not None:
        return ("path", ref.path)
    if ref.url is not None:
        return ("url", ref.url)
    if ref.data is not None:
        return ("data", len(ref.data), hash(ref.data))
    return None  # PIL images are in memory already; checking them is cheap


def count_parts(messages: Iterable[Message], kind: str) -> int:
    return sum(1 for m in messages for p in m["content"] if p.get("type") == kind)


_IMAGE_FIX = ("fix or replace the file, or set image_root if relative paths point elsewhere "
              "(image_path_map: {old: new} for absolute paths from another machine)")
_VIDEO_FIX = ("replace it with a real video file (mp4, webm, mkv, ...), set image_root if relative paths point "
              "elsewhere, or drop the video and its <video> placeholder")


def validate_record(
    record: PreferenceRecord,
    *,
    fields: Mapping[str, str] | None = None,
    image_checker: ImageChecker | None = None,
) -> list[RowError]:
    """Every rule FORMATS.md states for a normalized record; at most one error per field and kind."""
    names = {**DEFAULT_FIELDS, **(fields or {})}
    src = record.source
    file, row = (src.file, src.row) if src is not None else ("<record>", 0)
    errors: list[RowError] = []
    seen: set[tuple[str, str]] = set()

    def add(kind: str, field: str, message: str, fix: str) -> None:
        if (kind, field) not in seen:
            seen.add((kind, field))
            errors.append(RowError(kind, file, row, field, message, fix))

    _check_prompt(record.prompt, names["prompt"], add)
    for side in ("chosen", "rejected"):
        _check_response(getattr(record, side), side, names[side], add)
    _check_identical(record, names, add)
    _check_counts(record, names, add)
    if image_checker is not None and image_checker.mode != "none":
        for key in ("images", "rejected_images", "videos"):
            for i, ref in enumerate(getattr(record, key) or []):
                problem = image_checker(ref, video=key == "videos")
                if problem:
                    add("video" if key == "videos" else "image", f"{names[key]}[{i}]", problem,
                        _VIDEO_FIX if key == "videos" else _IMAGE_FIX)
    return errors


def _check_prompt(prompt: list[Message], field: str, add: Callable) -> None:
    if not prompt or all(not m["content"] for m in prompt):
        add("missing_field", field, "the prompt is empty",
            "give the question the answers respond to (a user turn)")
        return
    roles = [m["role"] for m in prompt]
    for i, m in enumerate(prompt):
        if m["role"] != "user":
            for p in m["content"]:
                if p.get("type") in ("image", "video"):
                    add("placeholder_outside_user", f"{field}[{i}]",
                        f"an <{p['type']}> placeholder sits in a {m['role']} turn",
                        "move image/video placeholders into user turns")
                    break
    body = roles[1:] if roles[0] == "system" else roles
    if "system" in body:
        add("roles", field, f"a system turn must come first and only once; roles are {roles}",
            "put a single system message at the start of the prompt")
        return
    if not body:
        add("roles", field, "the prompt has only a system turn", "add the user turn the answers respond to")
        return
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(body))]
    if body != expected:
        add("roles", field, f"roles must alternate user/assistant starting with user; got {roles}",
            "merge consecutive turns of the same role, or fix the role names")
    elif body[-1] != "user":
        add("roles", field, f"the prompt must end with a user turn; roles are {roles}",
            "end the prompt on the user turn the chosen/rejected answers reply to")


def _check_response(messages: list[Message], side: str, field: str, add: Callable) -> None:
    if not messages:
        add("missing_field", field, f"{side} is missing or empty", f"give the {side} answer text")
        return
    for m in messages:
        if m["role"] != "assistant":
            add("wrong_role", field, f"{side} must be assistant message(s), found role {m['role']!r}",
                f"set the role of the {side} answer to 'assistant' (or move other turns into the prompt)")
            return
    for m in messages:
        for p in m["content"]:
            if p.get("type") in ("image", "video"):
                add("placeholder_outside_user", field,
                    f"{side} contains an <{p['type']}> placeholder; images belong to user turns",
                    f"remove the placeholder from the {side} answer")
                return
    if not any(p.get("text", "").strip() for m in messages for p in m["content"] if p.get("type") == "text"):
        add("empty_response", field, f"{side} is empty or whitespace only",
            f"give a non-empty {side} answer, or remove the row")


def _texts(messages: list[Message]) -> list[tuple[str, tuple]]:
    return [(m["role"], tuple((p.get("type"), p.get("text")) for p in m["content"])) for m in messages]


def _check_identical(record: PreferenceRecord, names: Mapping[str, str], add: Callable) -> None:
    if not record.chosen or _texts(record.chosen) != _texts(record.rejected):
        return
    if record.rejected_images is not None and list(record.rejected_images) != list(record.images):
        return  # image-contrast pair: same text, different picture
    add("identical_responses", names["rejected"], "chosen and rejected are identical (same text, same images)",
        "a preference pair needs two different answers (or rejected_images for an image-contrast pair); "
        "remove the row or fix one side")


def _check_counts(record: PreferenceRecord, names: Mapping[str, str], add: Callable) -> None:
    n_img = count_parts(record.prompt, "image")
    n_vid = count_parts(record.prompt, "video")
    if n_img != len(record.images):
        add("placeholder_count", names["images"],
            f"the prompt has {n_img} image placeholder(s) but {len(record.images)} image(s) are given",
            "put exactly one <image> placeholder (or {'type': 'image'} part) per image, in order")
    if record.rejected_images is not None and len(record.rejected_images) != n_img:
        add("placeholder_count", names["rejected_images"],
            f"the prompt has {n_img} image placeholder(s) but {len(record.rejected_images)} rejected image(s) "
            "are given", "give one rejected image per prompt image placeholder")
    if n_vid != len(record.videos):
        add("placeholder_count", names["videos"],
            f"the prompt has {n_vid} video placeholder(s) but {len(record.videos)} video(s) are given",
            "put exactly one <video> placeholder per video, in order")
