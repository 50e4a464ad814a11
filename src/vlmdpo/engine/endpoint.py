"""An OpenAI-compatible chat endpoint (`vlmdpo serve`, vLLM, ...) as `sample` and `judge` use it: the `openai` client
when installed, else httpx; images go as data URIs; a server that is down or answers an error is one EndpointError."""
from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any

from vlmdpo.errors import FixableError


class EndpointError(FixableError):
    """A server that is down, refuses, or answers something that is not a chat completion."""


def base_url(url: str) -> str:
    """`http://host:8000`, `.../v1` and `.../v1/` all mean the API root `.../v1`."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def image_url(value: str) -> str:
    """A data URI or an http(s) URL as given; a local path read and encoded."""
    if value.startswith(("data:", "http://", "https://")):
        return value
    mime = mimetypes.guess_type(value)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(Path(value).read_bytes()).decode('ascii')}"


def openai_messages(messages: list[dict], images: list[str]) -> list[dict]:
    """Normalized messages -> OpenAI content parts, the n-th image part carrying images[n]."""
    pending = iter(images)
    out = []
    for m in messages:
        parts = []
        for p in m["content"]:
            if p.get("type") == "image":
                parts.append({"type": "image_url", "image_url": {"url": image_url(next(pending))}})
            elif p.get("type") == "text":
                parts.append({"type": "text", "text": p.get("text") or ""})
        out.append({"role": m["role"], "content": parts})
    return out


class Endpoint:
    """Chat completions at `url` for `model` (default: the first model the server lists); `model_flag` is
    the option that names the model in the caller's command, for the fixes."""

    def __init__(self, url: str, model: str | None = None, *, api_key: str | None = None, timeout: float = 600.0,
                 use_openai: bool | None = None, model_flag: str = "--served-model"):
        self.url = base_url(url)
        self.model_flag = model_flag
        self._key = api_key or "none"
        self._timeout = timeout
        if use_openai is None:
            try:
                import openai  # noqa: F401
                use_openai = True
            except ImportError:
                use_openai = False
        self._openai = None
        if use_openai:
            import openai

            self._openai = openai.OpenAI(base_url=self.url, api_key=self._key, timeout=timeout, max_retries=0)
        self.model = model or self._first_model()

    def _down(self, exc: Exception) -> EndpointError:
        return EndpointError(f"the endpoint {self.url} did not answer ({type(exc).__name__}: {exc})",
                             "start the server (e.g. `vlmdpo serve --model M`) or pass the right --endpoint; "
                             "rows already written are kept and the next run resumes after them")

    def _refused(self, status: int, text: str) -> EndpointError:
        return EndpointError(f"the endpoint {self.url} answered HTTP {status}: {text[:300]}",
                             f"check {self.model_flag} (a name the server serves), --api-key and the request limits")

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        """httpx fallback: one JSON request."""
        import httpx

        try:
            r = httpx.request(method, self.url + path, json=body, timeout=self._timeout,
                              headers={"Authorization": f"Bearer {self._key}"})
        except httpx.HTTPError as e:
            raise self._down(e) from None
        if r.status_code != 200:
            raise self._refused(r.status_code, r.text)
        try:
            return r.json()
        except ValueError:
            raise EndpointError(f"the endpoint {self.url} answered {path} with something that is not JSON: "
                                f"{r.text[:200]!r}", "point --endpoint at an OpenAI-compatible server") from None

    def _first_model(self) -> str:
        if self._openai is not None:
            import openai

            try:
                models = [m.id for m in self._openai.models.list().data]
            except openai.APIConnectionError as e:
                raise self._down(e) from None
            except openai.APIStatusError as e:
                raise self._refused(e.status_code, str(e.message)) from None
        else:
            models = [m.get("id") for m in self._call("GET", "/models").get("data") or []]
        if not models:
            raise EndpointError(f"the endpoint {self.url} lists no models", f"pass {self.model_flag} NAME")
        return str(models[0])

    def complete(self, messages: list[dict], images: list[str], *, temperature: float, top_p: float,
                 max_tokens: int, seed: int) -> str:
        body = {"model": self.model, "messages": openai_messages(messages, images), "temperature": temperature,
                "top_p": top_p, "max_tokens": max_tokens, "seed": seed}
        if self._openai is not None:
            import openai

            try:
                reply = self._openai.chat.completions.create(**body)
            except openai.APIConnectionError as e:
                raise self._down(e) from None
            except openai.APIStatusError as e:
                raise self._refused(e.status_code, str(e.message)) from None
            text = reply.choices[0].message.content if reply.choices else None
        else:
            data = self._call("POST", "/chat/completions", body)
            try:
                text = data["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                text = None
        if not isinstance(text, str):
            raise EndpointError(f"the endpoint {self.url} answered without choices[0].message.content",
                                "point --endpoint at an OpenAI-compatible chat completions server")
        return text.strip()
