"""The live server through the official openai client: models, JSON and streamed answers with images,
several models on one base, the same greedy text as `vlmdpo chat`, a training checkpoint, auth."""
from __future__ import annotations

import io
from pathlib import Path

import httpx
import openai
import pytest

from serve_helpers import data_uri, image_message, png_bytes

URI = data_uri(png_bytes(0))


@pytest.fixture(scope="module")
def client(tiny_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=tiny_server[0] + "/v1", api_key="unused", max_retries=0)


def ask(client, model: str, text: str = "What is in the picture?", **kw):
    kw = {"temperature": 0, "max_tokens": 8, **kw}
    return client.chat.completions.create(model=model, messages=image_message(text, URI), **kw)


def test_models_and_health(client, tiny_server):
    assert [m.id for m in client.models.list()] == ["lora", "base", "tuned", "ckpt"]
    assert httpx.get(tiny_server[0] + "/health").json()["status"] == "ok"


def test_json_and_stream_answer_alike_with_usage(client):
    reply = ask(client, "base")
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length") and choice.message.content
    assert reply.usage.prompt_tokens > 20 and 0 < reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    chunks = list(ask(client, "base", stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == choice.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


def test_stream_ends_with_done(tiny_server):
    body = {"model": "base", "messages": image_message("hi", URI), "max_tokens": 4, "temperature": 0, "stream": True}
    with httpx.stream("POST", tiny_server[0] + "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_adapters_share_one_base_and_answer_differently(client, tiny_server):
    served = tiny_server[1]
    assert served["lora"].engine is served["base"].engine is served["tuned"].engine
    assert served["ckpt"].engine is not served["base"].engine  # a checkpoint rebuilds its run's policy
    base, lora = ask(client, "base").choices[0].message.content, ask(client, "lora").choices[0].message.content
    assert base != lora
    assert ask(client, "base").choices[0].message.content == base  # the adapter was switched off again


def test_tuned_adapter_and_its_checkpoint_say_what_chat_says(client, trained_run: Path, image_root: Path):
    from vlmdpo.chat import run_chat
    from vlmdpo.inference import GenerationSettings

    class Piped(io.StringIO):
        def isatty(self) -> bool:
            return False

    prompt = "What shape is in the picture?"
    expected = run_chat(str(trained_run), images=[str(image_root / "photo.png")], prompt=prompt, device="cpu",
                        settings=GenerationSettings(max_new_tokens=8), stdin=Piped(), stdout=io.StringIO())
    uri = data_uri((image_root / "photo.png").read_bytes())
    for model in ("tuned", "ckpt"):
        reply = client.chat.completions.create(model=model, messages=image_message(prompt, uri), temperature=0,
                                               max_tokens=8)
        assert reply.choices[0].message.content == expected, model
    local = {"type": "image_url", "image_url": {"url": "photo.png"}}  # a path inside --image-root
    reply = client.chat.completions.create(model="tuned", temperature=0, max_tokens=8, messages=[
        {"role": "user", "content": [local, {"type": "text", "text": prompt}]}])
    assert reply.choices[0].message.content == expected


def test_stop_n_seed_and_system(client):
    full = ask(client, "lora", max_tokens=12).choices[0].message.content
    stop = full[4:6]
    cut = ask(client, "lora", max_tokens=12, stop=[stop]).choices[0]
    assert cut.message.content == full[:full.find(stop)].rstrip() and cut.finish_reason == "stop"
    two = ask(client, "base", n=2)
    assert [c.index for c in two.choices] == [0, 1] and two.choices[0].message.content == two.choices[1].message.content
    a = ask(client, "base", temperature=1.0, seed=7).choices[0].message.content
    assert ask(client, "base", temperature=1.0, seed=7).choices[0].message.content == a
    # the system message reaches the prompt (greedy: a random tiny model may well answer only whitespace)
    user = [{"role": "user", "content": "Hello"}]
    plain = client.chat.completions.create(model="base", messages=user, max_tokens=4, temperature=0)
    system = client.chat.completions.create(model="base", messages=[{"role": "system", "content": "Be brief."}, *user],
                                            max_tokens=4, temperature=0)
    assert system.usage.prompt_tokens > plain.usage.prompt_tokens and system.usage.completion_tokens >= 1


def test_other_hosts_need_a_key_and_requests_without_it_get_401(tiny_server):
    from vlmdpo.serve.app import ServerOptions, create_app
    from vlmdpo.serve.registry import ServeError
    from vlmdpo.serve.server import BackgroundServer, check_bind

    with pytest.raises(ServeError, match="--api-key"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "k")
    check_bind("127.0.0.1", None)
    with BackgroundServer(create_app(tiny_server[1], ServerOptions(api_key="s3cret"))) as url:
        r = httpx.get(url + "/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        keyed = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert ask(keyed, "base").choices[0].message.content
