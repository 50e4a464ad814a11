"""ms-swift rows: `messages` whose last assistant turn is the chosen answer, `rejected_response`
(a string, or a list of assistant messages), `images` / `rejected_images` / `videos` lists with
`<image>` / `<video>` placeholders in the user text, in order.
"""
from __future__ import annotations

from typing import Any, Mapping

from vlmdpo.data.formats.common import (
    PLAIN, RowContext, RowProblem, as_list, build_record, is_map, normalize_message, normalize_messages, require,
    resolve_all, text_message,
)
from vlmdpo.types import Message, PreferenceRecord

KNOWN = frozenset({"messages", "rejected_response", "images", "rejected_images", "videos"})
FIELDS = {"prompt": "messages", "chosen": "messages[-1]", "rejected": "rejected_response"}


def read_row(row: Mapping[str, Any], ctx: RowContext) -> PreferenceRecord:
    require(row, ("messages", "rejected_response"), "swift")
    messages = normalize_messages(row["messages"], "messages", PLAIN)
    if not messages or messages[-1]["role"] != "assistant":
        roles = [m["role"] for m in messages]
        raise RowProblem("roles", "messages",
                         f"the last message must be the assistant's chosen answer; roles are {roles}",
                         "end messages with the chosen assistant reply (the rejected one goes in rejected_response)")
    raw_rej = row.get("rejected_images")
    return build_record(
        row, ctx, KNOWN,
        prompt=messages[:-1],
        chosen=[messages[-1]],
        rejected=_rejected(row["rejected_response"]),
        images=resolve_all(as_list(row.get("images"), "images"), "images", ctx),
        rejected_images=(resolve_all(as_list(raw_rej, "rejected_images"), "rejected_images", ctx)
                         if raw_rej is not None else None),
        videos=resolve_all(as_list(row.get("videos"), "videos"), "videos", ctx),
    )


def field_names(ctx: RowContext) -> dict[str, str]:
    return FIELDS


def _rejected(value: Any) -> list[Message]:
    if isinstance(value, str):
        return [text_message("assistant", value, "rejected_response", PLAIN)]
    if is_map(value):
        value = [value]
    if not isinstance(value, list):
        raise RowProblem("bad_message", "rejected_response",
                         f"expected a string or a list of assistant messages, got {type(value).__name__}",
                         'write rejected_response as "text" or [{"role": "assistant", "content": "..."}]')
    out: list[Message] = []
    for i, item in enumerate(value):
        field = f"rejected_response[{i}]"
        if isinstance(item, str):
            out.append(text_message("assistant", item, field, PLAIN))
        else:
            out.append(normalize_message(item, field, PLAIN))
    return out
