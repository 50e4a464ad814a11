"""The judge's voice for `--by model`: a model vlmdpo loads, or an OpenAI-compatible endpoint (`engine/endpoint.py`,
the client `sample` uses too)."""
from __future__ import annotations

from typing import Callable


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


def endpoint_judge(url: str, model: str | None, *, max_new_tokens: int,
                   timeout: float = 120.0) -> Callable[[list[dict], list[str]], str]:
    """Greedy replies from a served model (`model`: its name; None = the first the server lists)."""
    from vlmdpo.engine.endpoint import Endpoint

    endpoint = Endpoint(url, model, timeout=timeout, model_flag="--judge-model")

    def ask(messages: list[dict], images: list[str]) -> str:
        return endpoint.complete(messages, images, temperature=0.0, top_p=1.0, max_tokens=max_new_tokens, seed=0)

    return ask
