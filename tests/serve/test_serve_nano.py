"""The built-in nano model behind the live server: JSON and streamed answers with an image, equal to
`vlmdpo chat`'s greedy reply."""
from __future__ import annotations

import io
from pathlib import Path

import openai
import pytest

from serve_helpers import data_uri, image_message, png_bytes


@pytest.fixture(scope="module")
def nano(tmp_path_factory):
    from vlmdpo.serve.app import ServerOptions, create_app
    from vlmdpo.serve.server import BackgroundServer, EngineOptions, load_served

    served = load_served(["builtin:nano-smolvlm"], EngineOptions(device="cpu"))
    with BackgroundServer(create_app(served, ServerOptions())) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    served["builtin:nano-smolvlm"].engine.close()


def test_nano_answers_as_chat_does(nano, tmp_path: Path):
    from vlmdpo.chat import run_chat
    from vlmdpo.inference import GenerationSettings

    class Piped(io.StringIO):
        def isatty(self) -> bool:
            return False

    (tmp_path / "img.png").write_bytes(png_bytes(5, (96, 96)))
    prompt = "What colour is the picture?"
    expected = run_chat("builtin:nano-smolvlm", images=[str(tmp_path / "img.png")], prompt=prompt, device="cpu",
                        settings=GenerationSettings(max_new_tokens=10), stdin=Piped(), stdout=io.StringIO())
    messages = image_message(prompt, data_uri(png_bytes(5, (96, 96))))
    reply = nano.chat.completions.create(model="builtin:nano-smolvlm", messages=messages, temperature=0, max_tokens=10)
    assert reply.choices[0].message.content == expected and expected.strip()
    stream = nano.chat.completions.create(model="builtin:nano-smolvlm", messages=messages, temperature=0,
                                          max_tokens=10, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected
