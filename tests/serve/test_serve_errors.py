"""Every bad input is a 4xx in OpenAI's error shape naming the field, and the next request still works."""
from __future__ import annotations

import base64
import json

import httpx
import pytest

from serve_helpers import assert_error, bomb_png, data_uri, image_message, png_bytes

GOOD = {"model": "base", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2, "temperature": 0}
IMG = "messages[0].content[0].image_url.url"


def with_image(url: str) -> dict:
    return {**GOOD, "messages": image_message("What is it?", url)}


CASES = {
    "unknown model": (404, "model", {**GOOD, "model": "gpt-4o"}),
    "missing model": (400, "model", {k: v for k, v in GOOD.items() if k != "model"}),
    "body not an object": (400, None, [GOOD]),
    "missing messages": (400, "messages", {"model": "base"}),
    "wrong role": (400, "messages[0].role", {**GOOD, "messages": [{"role": "tool", "content": "x"}]}),
    "last turn not the user's": (400, "messages[1].role", {**GOOD, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}),
    "unknown part type": (400, "messages[0].content[0].type", {**GOOD, "messages": [
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
    "image in an assistant turn": (400, "messages[0].content[0].type", {**GOOD, "messages": [
        {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": data_uri(png_bytes())}}]},
        {"role": "user", "content": "hi"}]}),
    "bad base64": (400, IMG, with_image("data:image/png;base64,!!!not-base64!!!")),
    "not an image": (400, IMG, with_image(data_uri(b"just some text, not pixels"))),
    "decompression bomb": (400, IMG, with_image(data_uri(bomb_png()))),
    "remote URL not allowed": (400, IMG, with_image("https://example.com/cat.png")),
    "path outside --image-root": (400, IMG, with_image("../../../etc/passwd")),
    "too many images": (400, "messages[0].content[2].image_url.url", {**GOOD, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_uri(png_bytes(i))}} for i in range(3)]}]}),
    "prompt over the context": (400, "messages", {**GOOD, "messages": [{"role": "user", "content": "hello " * 2500}]}),
    "max_tokens over the context": (400, "max_tokens", {**GOOD, "max_tokens": 100_000}),
    "max_tokens zero": (400, "max_tokens", {**GOOD, "max_tokens": 0}),
    "temperature out of range": (400, "temperature", {**GOOD, "temperature": 5}),
    "top_p zero": (400, "top_p", {**GOOD, "top_p": 0}),
    "n too large": (400, "n", {**GOOD, "n": 100}),
    "stop not strings": (400, "stop", {**GOOD, "stop": [1, 2]}),
    "stream not a bool": (400, "stream", {**GOOD, "stream": "yes"}),
    "tools": (400, "tools", {**GOOD, "tools": [{"type": "function"}]}),
}


@pytest.fixture(scope="module")
def http(tiny_server):
    with httpx.Client(base_url=tiny_server[0], timeout=60) as client:
        yield client


def still_serves(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", json=GOOD)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant", r.text


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request_is_named_and_harmless(http, case):
    status, param, body = CASES[case]
    assert_error(http.post("/v1/chat/completions", json=body), status, param)
    still_serves(http)


def test_malformed_json(http):
    error = assert_error(http.post("/v1/chat/completions", content=b'{"model": "base", "messages": [',
                                   headers={"content-type": "application/json"}), 400, None)
    assert error["code"] == "invalid_json" and "not valid JSON" in error["message"]
    still_serves(http)


def test_oversized_body(http):
    big = {**GOOD, "messages": [{"role": "user", "content": "x" * 300_000}]}
    error = assert_error(http.post("/v1/chat/completions", content=json.dumps(big)), 413, None)
    assert "--max-body-mb" in error["message"]
    still_serves(http)


def test_unknown_route_and_the_fix_in_messages(http):
    assert_error(http.get("/v1/completions"), 404, None)
    error = assert_error(http.post("/v1/chat/completions", json=with_image(data_uri(bomb_png()))), 400, IMG)
    assert "decompression-bomb" in error["message"] and error["code"] == "invalid_image"
    bad = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()  # a PNG signature, then garbage
    assert_error(http.post("/v1/chat/completions", json=with_image(f"data:image/png;base64,{bad}")), 400, IMG)
    still_serves(http)
