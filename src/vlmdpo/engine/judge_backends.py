"""The judge's voice for `--by model`: a model vlmdpo loads, or an OpenAI-compatible endpoint."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from vlmdpo.engine.endpoint import openai_messages
from vlmdpo.engine.judge_io import JudgeError


class LocalJudge:
    """A judge model loaded with `load_for_inference`; greedy answers."""

    def __init__(self, name: str, *, max_new_tokens: int, device: str | None = None):
        from vlmdpo.inference import GenerationSettings, load_for_inference

        self.im = load_for_inference(name, device=device)
        self.settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0)

    def __call__(self, messages: list[dict], images: list[str]) -> str:
        from vlmdpo.data.images import load_image, resolve_image
        from vlmdpo.inference import generate

        pixels = [load_image(resolve_image(ref)) for ref in images]
        return generate(self.im, messages, pixels, self.settings)


def chat_url(endpoint: str) -> str:
    """`http://host:8000`, `.../v1` or the full `.../v1/chat/completions` -> the chat completions URL."""
    url = endpoint.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    return url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")


class EndpointJudge:
    """An OpenAI-compatible chat completions server (e.g. `vlmdpo serve`, vLLM)."""

    def __init__(self, endpoint: str, *, model: str, max_new_tokens: int, timeout: float = 120.0):
        self.url, self.model, self.max_tokens, self.timeout = chat_url(endpoint), model, max_new_tokens, timeout

    def _content(self, messages: list[dict], images: list[str]) -> list[dict]:
        return openai_messages(messages, images)

    def __call__(self, messages: list[dict], images: list[str]) -> str:
        body = {"model": self.model, "messages": self._content(messages, images), "max_tokens": self.max_tokens,
                "temperature": 0}
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode("utf-8", "replace")
            raise JudgeError(f"judge endpoint {self.url} answered HTTP {exc.code}: {detail}",
                             "check --endpoint and --judge-model (the served model's name)") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise JudgeError(f"judge endpoint {self.url} is not reachable ({reason})",
                             "start the server (e.g. `vlmdpo serve`), or fix --endpoint; rerun to resume") from None
        return _reply_text(raw, self.url)


def _reply_text(raw: bytes, url: str) -> str:
    try:
        reply: Any = json.loads(raw)
        text = reply["choices"][0]["message"]["content"]
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        raise JudgeError(f"judge endpoint {url} returned something that is not a chat completion: "
                         f"{raw[:120].decode('utf-8', 'replace')!r}",
                         "point --endpoint at an OpenAI-compatible server") from None
    return text if isinstance(text, str) else ""
