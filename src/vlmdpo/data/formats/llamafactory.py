"""LLaMA-Factory preference rows: ShareGPT and Alpaca, with `dataset_info.json` honoured.

A dataset_info.json entry ({"file_name", "formatting", "ranking", "columns", "tags"}) renames
columns and role tags exactly as LLaMA-Factory reads them; without one the defaults below
apply (LLaMA-Factory's, plus `images`/`videos`/`system`/`history` used when present). ShareGPT
conversations must alternate human/gpt starting with human and end on a human turn.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from vlmdpo.data.formats.common import (
    PLAIN, RowContext, RowProblem, as_list, build_record, is_map, normalize_content, resolve_all, text_message,
)
from vlmdpo.types import Message, PreferenceRecord

SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system", "tools": "tools", "images": "images",
                    "videos": "videos", "chosen": "chosen", "rejected": "rejected"}
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": "history",
                  "system": "system", "images": "images", "videos": "videos", "chosen": "chosen",
                  "rejected": "rejected"}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "observation_tag": "tool", "function_tag": "function", "system_tag": "system"}


@dataclass(frozen=True)
class Spec:
    """How to read one LLaMA-Factory file: formatting, column names and tags."""

    formatting: str  # "sharegpt" | "alpaca"
    columns: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    ranking: bool = True
    origin: str = ""  # e.g. "dataset_info.json entry 'rlhf_v'" (empty: defaults)


def default_spec(formatting: str, row: Mapping[str, Any] | None = None) -> Spec:
    if formatting == "alpaca":
        return Spec("alpaca", dict(ALPACA_COLUMNS))
    columns = dict(SHAREGPT_COLUMNS)
    tags = dict(SHAREGPT_TAGS)
    if row is not None and "conversations" not in row and "messages" in row:
        columns["messages"] = "messages"  # the OpenAI-style layout LLaMA-Factory documents
    if row is not None and _first_message_has(row.get(columns["messages"]), "role"):
        tags = dict(OPENAI_TAGS)
    return Spec("sharegpt", columns, tags)


def _first_message_has(conv: Any, key: str) -> bool:
    return isinstance(conv, list) and bool(conv) and is_map(conv[0]) and key in conv[0]


def parse_entry(entry: Any, origin: str) -> Spec:
    """A dataset_info.json entry -> Spec; a malformed entry is a ValueError naming the key."""
    if not is_map(entry):
        raise ValueError(f"{origin}: expected an object, got {type(entry).__name__}")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("sharegpt", "alpaca"):
        raise ValueError(f"{origin}: 'formatting' must be 'sharegpt' or 'alpaca', got {formatting!r}")
    for key in ("columns", "tags"):
        if not is_map(entry.get(key, {})):
            raise ValueError(f"{origin}: '{key}' must be an object")
    base = default_spec(formatting)
    columns = {**base.columns, **{k: v for k, v in entry.get("columns", {}).items() if isinstance(v, str)}}
    tags = {**base.tags, **{k: v for k, v in entry.get("tags", {}).items() if isinstance(v, str)}}
    return Spec(formatting, columns, tags, bool(entry.get("ranking", False)), origin)


def load_dataset_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read dataset_info.json ({exc})") from None
    if not is_map(info):
        raise ValueError(f"{path}: dataset_info.json must be an object of dataset entries")
    return dict(info)


def entry_for_file(info: Mapping[str, Any], rel_name: str, origin: str) -> Spec | None:
    """The entry registering `rel_name` (path relative to dataset_info.json's folder), if any.

    A dict that is itself one entry (has "formatting"/"columns"/"tags", no "file_name"
    mismatch) applies to every file: that is how a caller passes settings directly.
    """
    if any(k in info for k in ("formatting", "columns", "tags", "ranking")):
        name = info.get("file_name")
        if name is None or Path(str(name)).as_posix() == rel_name or Path(str(name)).name == rel_name:
            return parse_entry(info, origin)
        return None
    for name, entry in info.items():
        if is_map(entry) and "file_name" in entry:
            fname = Path(str(entry["file_name"])).as_posix()
            if fname == rel_name or fname.rstrip("/") == rel_name.split("/")[0]:
                return parse_entry(entry, f"{origin} entry {name!r}")
    return None


def read_sharegpt(row: Mapping[str, Any], ctx: RowContext) -> PreferenceRecord:
    spec: Spec = ctx.spec if isinstance(ctx.spec, Spec) and ctx.spec.formatting == "sharegpt" \
        else default_spec("sharegpt", row)
    col, tags = spec.columns, spec.tags
    _require(row, (col["messages"], col["chosen"], col["rejected"]), spec)
    conv = row[col["messages"]]
    if not isinstance(conv, list):
        raise RowProblem("bad_message", col["messages"], f"expected a list of turns, got {type(conv).__name__}",
                         f'write {col["messages"]} as [{{"{tags["role_tag"]}": "{tags["user_tag"]}", '
                         f'"{tags["content_tag"]}": "..."}}]')
    prompt: list[Message] = []
    start = 0
    if conv and _role(conv[0], col["messages"] + "[0]", tags) == tags["system_tag"]:
        prompt.append(_msg("system", conv[0], f'{col["messages"]}[0]', tags))
        start = 1
    elif isinstance(row.get(col.get("system", "")), str) and row[col["system"]]:
        prompt.append(text_message("system", row[col["system"]], col["system"]))
    for i in range(start, len(conv)):
        where = f'{col["messages"]}[{i}]'
        tag = _role(conv[i], where, tags)
        want = tags["user_tag"] if (i - start) % 2 == 0 else tags["assistant_tag"]
        if tag in (tags["observation_tag"], tags["function_tag"]):
            raise RowProblem("unsupported", where, f"tool turns ({tag!r}) are not supported",
                             "drop tool turns from preference data, or convert them to plain user/assistant text")
        if tag != want:
            raise RowProblem("roles", where,
                             f"roles must alternate {tags['user_tag']}/{tags['assistant_tag']} starting with "
                             f"{tags['user_tag']}; turn {i} is {tag!r}, expected {want!r}",
                             "fix the role tag or merge consecutive turns of the same speaker")
        prompt.append(_msg("user" if want == tags["user_tag"] else "assistant", conv[i], where, tags))
    if (len(conv) - start) % 2 == 0:
        raise RowProblem("roles", col["messages"],
                         f"{col['messages']} must end on a {tags['user_tag']} turn (the answers reply to it); "
                         f"it has {len(conv) - start} non-system turns",
                         f"move the final {tags['assistant_tag']} turn into chosen, or add the question")
    chosen = _answer(row[col["chosen"]], col["chosen"], tags)
    rejected = _answer(row[col["rejected"]], col["rejected"], tags)
    return _finish(row, ctx, spec, prompt, chosen, rejected)


def read_alpaca(row: Mapping[str, Any], ctx: RowContext) -> PreferenceRecord:
    spec: Spec = ctx.spec if isinstance(ctx.spec, Spec) and ctx.spec.formatting == "alpaca" \
        else default_spec("alpaca")
    col = spec.columns
    _require(row, (col["prompt"], col["chosen"], col["rejected"]), spec)
    prompt: list[Message] = []
    if isinstance(row.get(col["system"]), str) and row[col["system"]]:
        prompt.append(text_message("system", row[col["system"]], col["system"]))
    history = row.get(col["history"])
    if history:
        if not isinstance(history, list):
            raise RowProblem("bad_message", col["history"], "history must be a list of [question, answer] pairs",
                             'write history as [["q1", "a1"], ["q2", "a2"]]')
        for i, pair in enumerate(history):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise RowProblem("bad_message", f'{col["history"]}[{i}]', "expected a [question, answer] pair",
                                 'write history as [["q1", "a1"], ...]')
            prompt.append(text_message("user", pair[0], f'{col["history"]}[{i}][0]'))
            prompt.append(text_message("assistant", pair[1], f'{col["history"]}[{i}][1]'))
    query = [row[k] for k in (col["prompt"], col["query"]) if isinstance(row.get(k), str) and row[k]]
    prompt.append(text_message("user", "\n".join(query), col["prompt"]))
    chosen = [text_message("assistant", row[col["chosen"]], col["chosen"])]
    rejected = [text_message("assistant", row[col["rejected"]], col["rejected"])]
    return _finish(row, ctx, spec, prompt, chosen, rejected)


def field_names(ctx: RowContext) -> dict[str, str]:
    spec = ctx.spec if isinstance(ctx.spec, Spec) else None
    col = spec.columns if spec else {**SHAREGPT_COLUMNS, **ALPACA_COLUMNS}
    prompt = col.get("messages") if (spec is None or spec.formatting == "sharegpt") else col.get("prompt")
    return {"prompt": prompt or "prompt", "chosen": col["chosen"], "rejected": col["rejected"],
            "images": col["images"], "videos": col["videos"]}


def _require(row: Mapping[str, Any], keys: tuple[str, ...], spec: Spec) -> None:
    missing = [k for k in keys if row.get(k) is None]
    if missing:
        via = f" (columns from {spec.origin})" if spec.origin else ""
        raise RowProblem("missing_field", missing[0],
                         f"missing {', '.join(repr(k) for k in missing)} for {spec.formatting}{via}; "
                         f"row keys: {sorted(row)}",
                         f"add {', '.join(missing)}, or map your column names in dataset_info.json 'columns'")


def _role(turn: Any, where: str, tags: Mapping[str, str]) -> Any:
    if not is_map(turn) or tags["role_tag"] not in turn:
        raise RowProblem("bad_message", where, f"a turn must be an object with a '{tags['role_tag']}' key",
                         f'write turns as {{"{tags["role_tag"]}": ..., "{tags["content_tag"]}": ...}}, or set '
                         "role_tag/content_tag in dataset_info.json 'tags'")
    return turn[tags["role_tag"]]


def _msg(role: str, turn: Mapping[str, Any], where: str, tags: Mapping[str, str]) -> Message:
    return {"role": role, "content": normalize_content(turn.get(tags["content_tag"]), where, PLAIN)}


def _answer(value: Any, where: str, tags: Mapping[str, str]) -> list[Message]:
    if isinstance(value, str):
        return [text_message("assistant", value, where)]
    tag = _role(value, where, tags)
    if tag != tags["assistant_tag"]:
        raise RowProblem("wrong_role", where, f"{where} must be a {tags['assistant_tag']!r} turn, got {tag!r}",
                         f'write {where} as {{"{tags["role_tag"]}": "{tags["assistant_tag"]}", '
                         f'"{tags["content_tag"]}": "..."}}')
    return [_msg("assistant", value, where, tags)]


def _finish(row: Mapping[str, Any], ctx: RowContext, spec: Spec, prompt: list[Message], chosen: list[Message],
            rejected: list[Message]) -> PreferenceRecord:
    col = spec.columns
    images = resolve_all(as_list(row.get(col["images"]), col["images"]), col["images"], ctx)
    videos = resolve_all(as_list(row.get(col["videos"]), col["videos"]), col["videos"], ctx)
    known = frozenset(v for k, v in col.items() if k not in ("tools", "response"))
    return build_record(row, ctx, known, prompt=prompt, chosen=chosen, rejected=rejected, images=images,
                        videos=videos)
