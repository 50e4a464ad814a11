"""What every reader shares: the row context, the row-problem exception, message normalization.

Normalized message: {"role": "system"|"user"|"assistant", "content": [part, ...]} where a part
is {"type": "text", "text": str}, {"type": "image"} or {"type": "video"}. Placeholders inside
strings become parts at their position; adjacent text parts are kept apart; empty text parts
are dropped. These helpers run once per message of every row, so they avoid regexes and
allocations when a string holds no placeholder.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from vlmdpo.types import ImageRef, Message, PreferenceRecord, RowSource

ROLES = ("system", "user", "assistant")


def is_map(value: Any) -> bool:
    """isinstance(value, Mapping), with the common dict case first: ABC checks are slow per row."""
    kind = type(value)
    if kind is dict:
        return True
    return kind not in _NOT_MAPS and isinstance(value, Mapping)


_NOT_MAPS = frozenset({list, str, tuple, type(None), int, float, bool, bytes})


class RowProblem(Exception):
    """A row a reader cannot turn into a record: kind, the offending field, what and how to fix."""

    def __init__(self, kind: str, field: str, message: str, fix: str = ""):
        super().__init__(message)
        self.kind, self.field, self.message, self.fix = kind, field, message, fix


@dataclass
class Placeholders:
    """Which literal strings stand for an image / a video inside text."""

    pattern: re.Pattern
    kinds: dict[str, str]  # literal -> "image" | "video"
    probes: tuple[str, ...]  # cheap substring tests before running the regex


def make_placeholders(image: tuple[str, ...], video: tuple[str, ...]) -> Placeholders:
    kinds = {**{t: "image" for t in image}, **{t: "video" for t in video}}
    # Longest first so "<|vision_start|><|image_pad|><|vision_end|>" wins over "<|image_pad|>".
    alternatives = sorted(kinds, key=len, reverse=True)
    pattern = re.compile("(" + "|".join(re.escape(a) for a in alternatives) + ")")
    return Placeholders(pattern, kinds, tuple(sorted({a[:7] for a in alternatives})))


# What dataset formats write in text (TRL conversational, ms-swift, LLaMA-Factory, RLAIF-V).
PLAIN = make_placeholders(("<image>",), ("<video>",))
# TRL's *standard* format puts the model's own image token into the prompt string.
MODEL_TOKENS = make_placeholders(
    (
        "<|vision_start|><|image_pad|><|vision_end|>",  # Qwen2/2.5/3-VL
        "<|image_pad|>",
        "<start_of_image>",  # Gemma 3
        "<|image|>",  # Llama 3.2 Vision
        "<image>",  # SmolVLM / Idefics, LLaVA, PaliGemma
    ),
    ("<|vision_start|><|video_pad|><|vision_end|>", "<|video_pad|>", "<video>"),
)


@dataclass
class RowContext:
    """Where the current row comes from and how to resolve its images.

    One object per file; the loader updates `row` before each call, so readers must not keep it.
    """

    file: str  # the label used in error messages, e.g. "data/prefs.jsonl"
    stem: str  # for default ids: f"{stem}-{row}"
    row: int = 0
    base_dir: Path | None = None
    image_root: Path | None = None
    allow_remote: bool = False
    spec: Any = None  # format-specific settings (LLaMA-Factory dataset_info entry)
    resolver: Callable[[Any], ImageRef] | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def source(self) -> RowSource:
        return RowSource(self.file, self.row)

    def resolve(self, value: Any, field_name: str) -> ImageRef:
        """An ImageRef for one image value; string values are cached since rows share files."""
        cacheable = isinstance(value, str)
        if cacheable and value in self._cache:
            return self._cache[value]
        try:
            if self.resolver is not None:
                ref = self.resolver(value)
            else:
                from vlmdpo.data.images import resolve_image

                ref = resolve_image(value, base_dir=self.base_dir, image_root=self.image_root,
                                    allow_remote=self.allow_remote)
        except ValueError as exc:  # ImageSpecError is a ValueError
            message = exc.args[0] if exc.args else str(exc)
            fix = getattr(exc, "fix", "") or "give a file path, a data: URI or an image dict with bytes/path"
            raise RowProblem("image", field_name, str(message), fix) from None
        if cacheable:
            if len(self._cache) > 200_000:  # bound memory for huge files with unique paths
                self._cache.clear()
            self._cache[value] = ref
        return ref


def split_text(text: str, ph: Placeholders = PLAIN) -> list[dict]:
    """Text with placeholders -> parts; "" pieces are dropped."""
    if "<" not in text or not any(p in text for p in ph.probes):
        return [{"type": "text", "text": text}] if text else []
    parts: list[dict] = []
    for piece in ph.pattern.split(text):
        if not piece:
            continue
        kind = ph.kinds.get(piece)
        parts.append({"type": kind} if kind else {"type": "text", "text": piece})
    return parts


def normalize_content(content: Any, field_name: str, ph: Placeholders = PLAIN,
                      inline: list | None = None) -> list[dict]:
    """A message's content (string, list of parts, or None) -> normalized parts.

    Image parts that carry their image inline ({"type": "image", "image": x}) append x to
    `inline`, so a reader can use them when the row has no separate images column.
    """
    if content is None:
        return []
    if isinstance(content, str):
        return split_text(content, ph)
    if not isinstance(content, list):
        raise RowProblem("bad_message", field_name,
                         f"content must be a string or a list of parts, got {type(content).__name__}",
                         'write content as "text" or [{"type": "text", "text": "..."}, {"type": "image"}]')
    parts: list[dict] = []
    for j, part in enumerate(content):
        if isinstance(part, str):
            parts.extend(split_text(part, ph))
            continue
        kind = part.get("type") if is_map(part) else None
        if kind == "text":
            text = part.get("text")
            if text is None:  # datasets fills missing struct fields with None
                continue
            if not isinstance(text, str):
                raise RowProblem("bad_message", f"{field_name}.content[{j}].text",
                                 f"text must be a string, got {type(text).__name__}", "write the text as a string")
            parts.extend(split_text(text, ph))
        elif kind in ("image", "video"):
            value = next((part.get(k) for k in (kind, "url", "path") if part.get(k) is not None), None)
            if value is not None:
                if inline is None or kind == "video":
                    raise RowProblem("bad_message", f"{field_name}.content[{j}]",
                                     f"inline {kind} values are not supported here",
                                     f"list the {kind}s in the row's {kind}s column and keep a bare placeholder")
                inline.append(value)
            parts.append({"type": kind})
        else:
            raise RowProblem("bad_message", f"{field_name}.content[{j}]",
                             f"unknown content part {part!r:.80}",
                             'use {"type": "text", "text": ...}, {"type": "image"} or {"type": "video"}')
    return parts


def normalize_message(msg: Any, field_name: str, ph: Placeholders = PLAIN, inline: list | None = None,
                      role_key: str = "role", content_key: str = "content",
                      role_map: Mapping[str, str] | None = None) -> Message:
    if not is_map(msg):
        raise RowProblem("bad_message", field_name, f"a message must be an object, got {type(msg).__name__}",
                         f'write messages as {{"{role_key}": "user", "{content_key}": "..."}}')
    if role_key not in msg:
        raise RowProblem("bad_message", field_name, f"message has no '{role_key}' key (keys: {sorted(msg)})",
                         f"give every message a '{role_key}'")
    raw_role = msg[role_key]
    role = role_map.get(raw_role) if role_map is not None else raw_role
    if role not in ROLES:
        known = sorted(role_map) if role_map is not None else list(ROLES)
        raise RowProblem("wrong_role", field_name, f"unknown role {raw_role!r}",
                         f"use one of {known}" + ("; tool turns are not supported" if raw_role else ""))
    return {"role": role, "content": normalize_content(msg.get(content_key), field_name, ph, inline)}


def normalize_messages(value: Any, field_name: str, ph: Placeholders = PLAIN, inline: list | None = None,
                       **kw: Any) -> list[Message]:
    if is_map(value):
        value = [value]
    if not isinstance(value, list):
        raise RowProblem("bad_message", field_name,
                         f"expected a list of messages, got {type(value).__name__}",
                         'write it as [{"role": ..., "content": ...}, ...]')
    return [normalize_message(m, f"{field_name}[{i}]", ph, inline, **kw) for i, m in enumerate(value)]


def text_message(role: str, text: Any, field_name: str, ph: Placeholders = PLAIN) -> Message:
    if text is not None and not isinstance(text, str):
        raise RowProblem("bad_message", field_name, f"expected a string, got {type(text).__name__}",
                         f"write {field_name} as a string")
    return {"role": role, "content": split_text(text or "", ph)}


def require(row: Mapping, keys: tuple[str, ...], fmt: str) -> None:
    missing = [k for k in keys if row.get(k) is None]
    if missing:
        raise RowProblem("missing_field", missing[0],
                         f"missing {', '.join(repr(k) for k in missing)} (format {fmt}; row keys: {sorted(row)})",
                         f"add {', '.join(missing)} to the row, or pick the right format")


def as_list(value: Any, field_name: str) -> list:
    """An images/videos column value as a list (None -> [], a single value -> [value])."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]  # one path / dict / PIL image


def resolve_all(values: list, field_name: str, ctx: RowContext) -> list[ImageRef]:
    return [ctx.resolve(v, f"{field_name}[{i}]") for i, v in enumerate(values)]


def insert_images_first(prompt: list[Message], n: int, kind: str = "image") -> None:
    """Put n placeholders at the start of the first user turn (TRL and RLAIF-V behaviour)."""
    for msg in prompt:
        if msg["role"] == "user":
            msg["content"][:0] = [{"type": kind} for _ in range(n)]
            return


def build_record(row: Mapping, ctx: RowContext, known: frozenset[str], *, prompt: list[Message],
                 chosen: list[Message], rejected: list[Message], images: list[ImageRef] | None = None,
                 rejected_images: list[ImageRef] | None = None, videos: list[ImageRef] | None = None
                 ) -> PreferenceRecord:
    """The record with id (row's `id` or stem-row) and meta (row's `meta` dict + unknown columns)."""
    rid = row.get("id")
    meta: dict[str, Any] = {}
    if is_map(row.get("meta")):
        meta.update(row["meta"])  # written by vlmdpo convert, so round trips keep meta flat
    elif row.get("meta") is not None:
        meta["meta"] = row["meta"]
    for key, value in row.items():
        if key not in known and key not in ("id", "meta"):
            meta[key] = value
    return PreferenceRecord(
        id=str(rid) if rid is not None else f"{ctx.stem}-{ctx.row}",
        prompt=prompt, chosen=chosen, rejected=rejected, images=images or [],
        rejected_images=rejected_images, videos=videos or [], meta=meta, source=ctx.source(),
    )
