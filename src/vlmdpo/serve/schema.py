"""A chat-completions request body -> ChatRequest, or an ApiError in OpenAI's error shape naming the field.

Fields OpenAI defines that do not change what we generate (user, logprobs=false, ...) are ignored,
as OpenAI-compatible servers do; fields that would change it and that we cannot honour are refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOP, MAX_N = 4, 8
UNSUPPORTED = ("tools", "functions", "tool_choice", "logit_bias", "response_format")


class ApiError(Exception):
    """A request the server refuses: HTTP status and OpenAI's {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad(param: str | None, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, f"{param}: {message}" if param else message, param=param, code=code)


@dataclass(frozen=True)
class ImageSpec:
    param: str  # where it sits in the request, for errors: messages[0].content[1].image_url.url
    url: str


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]  # normalized: {"role", "content": [{"type": "text", "text"} | {"type": "image"}]}
    images: list[ImageSpec]  # in placeholder order
    max_tokens: int | None = None  # None: the server's default
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    stream: bool = False
    include_usage: bool = False


def _number(body: dict, key: str, low: float, high: float, default: float, *, low_open: bool = False) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(key, f"must be a number, got {type(value).__name__}")
    if value < low or value > high or (low_open and value == low):
        interval = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise bad(key, f"{value} is outside {interval}")
    return float(value)


def _integer(body: dict, key: str, low: int | None = None, high: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(key, f"must be an integer, got {type(value).__name__}")
    if low is not None and value < low:
        raise bad(key, f"must be at least {low}, got {value}")
    if high is not None and value > high:
        raise bad(key, f"must be at most {high}, got {value}")
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise bad("stop", "must be a non-empty string or a list of non-empty strings")
    if len(items) > MAX_STOP:
        raise bad("stop", f"at most {MAX_STOP} stop sequences, got {len(items)}")
    return tuple(items)


def _image_url(part: dict, where: str) -> str:
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url.strip():
        raise bad(f"{where}.image_url.url", "must be a string: a data:image/...;base64 URI (or an allowed URL or path)")
    return url


def _content(content: Any, role: str, where: str, images: list[ImageSpec]) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise bad(f"{where}.content", "must be a string or a non-empty list of content parts")
    parts = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad(f"{at}.text", "must be a string")
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            if role != "user":
                raise bad(f"{at}.type", f"images belong in user messages, not in a {role} message")
            images.append(ImageSpec(f"{at}.image_url.url", _image_url(part, at)))
            parts.append({"type": "image"})
        else:
            raise bad(f"{at}.type", f"content part type {kind!r} is not supported; use 'text' or 'image_url'")
    return parts


def _messages(value: Any) -> tuple[list[dict], list[ImageSpec]]:
    if not isinstance(value, list) or not value:
        raise bad("messages", "must be a non-empty list of {role, content} objects")
    messages: list[dict] = []
    images: list[ImageSpec] = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(where, "must be an object with 'role' and 'content'")
        role = ROLES.get(m.get("role")) if isinstance(m.get("role"), str) else None
        if role is None:
            raise bad(f"{where}.role", f"{m.get('role')!r} is not a supported role; use system, user or assistant")
        messages.append({"role": role, "content": _content(m.get("content"), role, where, images)})
    if messages[-1]["role"] != "user":
        raise bad(f"messages[{len(messages) - 1}].role", "the last message must be from the user (the model "
                  "answers it)")
    return messages, images


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a decoded JSON body; the first problem found is raised as a 400 naming its field."""
    if not isinstance(body, dict):
        raise bad(None, "the request body must be a JSON object", "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model", "is required: one of the names GET /v1/models lists")
    for key in UNSUPPORTED:
        if body.get(key):
            raise bad(key, "is not supported by this server; remove it")
    messages, images = _messages(body.get("messages"))
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("stream", "must be true or false")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad("stream_options", "must be an object such as {\"include_usage\": true}")
    return ChatRequest(
        model=model, messages=messages, images=images, max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0, 1.0), top_p=_number(body, "top_p", 0.0, 1.0, 1.0,
                                                                             low_open=True),
        seed=_integer(body, "seed"), stop=_stop(body.get("stop")), n=_integer(body, "n", 1, MAX_N) or 1,
        stream=stream, include_usage=bool(options.get("include_usage")))
