"""The HTTP routes: GET /health, GET /v1/models, POST /v1/chat/completions (JSON or server-sent events).

Every refusal is a 4xx in OpenAI's error shape naming the field; an unexpected failure is a 500 in the
same shape without a traceback; neither stops the server.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from vlmdpo.inference import GenerationSettings
from vlmdpo.serve.engine import Job
from vlmdpo.serve.media import ImagePolicy, load_request_images
from vlmdpo.serve.registry import Served, lookup
from vlmdpo.serve.schema import ApiError, ChatRequest, bad, parse_chat_request


@dataclass
class ServerOptions:
    api_key: str | None = None
    max_body_bytes: int = 20 * 2**20
    default_max_tokens: int = 256
    images: ImagePolicy = field(default_factory=ImagePolicy)


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _authorized(request: Request, key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), key.encode())


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is {int(declared):,} bytes, over this server's limit of {limit:,}; "
                       "send smaller images (or start the server with a larger --max-body-mb)", code="body_too_large")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise ApiError(413, f"the request body is over this server's limit of {limit:,} bytes; send smaller "
                           "images (or start the server with a larger --max-body-mb)", code="body_too_large")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(None, f"the request body is not valid JSON ({exc}); send a JSON object with 'model' and "
                  "'messages'", "invalid_json") from None


def build_job(served: Served, req: ChatRequest, options: ServerOptions) -> Job:
    """Images decoded, prompt counted and checked against the context (runs off the event loop)."""
    images = load_request_images(req.images, options.images, served.max_images)
    max_tokens = req.max_tokens or options.default_max_tokens
    engine = served.engine
    try:
        prompt = engine.count_prompt_tokens(req.messages, images)
    except ValueError as exc:  # the processor refused the conversation
        raise bad("messages", f"the model cannot take this conversation ({exc})") from None
    context = engine.context_length
    if context and prompt >= context:
        raise ApiError(400, f"messages: the prompt is {prompt} tokens, over this model's context of {context}; "
                       "shorten the conversation or send fewer images", param="messages",
                       code="context_length_exceeded")
    if context and prompt + max_tokens > context:
        raise bad("max_tokens", f"{max_tokens} plus the prompt's {prompt} tokens exceeds the context of {context}; "
                  f"set max_tokens to at most {context - prompt}", "context_length_exceeded")
    seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
    settings = GenerationSettings(max_new_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, seed=seed)
    return Job(served.adapter, req.messages, images, settings, req.stop, req.n, emit=lambda event: None,
               prompt_tokens=prompt)


def _usage(job: Job, completion: int) -> dict[str, int]:
    return {"prompt_tokens": job.prompt_tokens, "completion_tokens": completion,
            "total_tokens": job.prompt_tokens + completion}


def _sse(payload: Any) -> bytes:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()


async def _stream(job: Job, queue: asyncio.Queue, head: dict, include_usage: bool) -> AsyncIterator[bytes]:
    def chunk(choices: list[dict], **extra) -> bytes:
        return _sse({**head, "object": "chat.completion.chunk", "choices": choices, **extra})

    completion = 0
    try:
        for i in range(job.n):
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        while (event := await queue.get())[0] != "end":
            if event[0] == "text":
                yield chunk([{"index": event[1], "delta": {"content": event[2]}, "finish_reason": None}])
            elif event[0] == "done":
                completion += event[3]
                yield chunk([{"index": event[1], "delta": {}, "finish_reason": event[2]}])
            else:
                yield _sse(ApiError(500, event[1], kind="server_error", code="generation_failed").body())
        if include_usage:
            yield chunk([], usage=_usage(job, completion))
        yield _sse("[DONE]")
    finally:  # the client left (or the stream ended): a generation still running for it stops
        job.cancelled.set()


async def _collect(job: Job, queue: asyncio.Queue, head: dict, request: Request) -> JSONResponse:
    texts, finish, completion = [""] * job.n, ["stop"] * job.n, 0
    while True:
        try:
            event = await asyncio.wait_for(queue.get(), timeout=0.5)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                job.cancelled.set()
                return JSONResponse({}, status_code=499)
            continue
        if event[0] == "end":
            break
        if event[0] == "text":
            texts[event[1]] += event[2]
        elif event[0] == "done":
            finish[event[1]], completion = event[2], completion + event[3]
        else:
            return error_response(ApiError(500, event[1], kind="server_error", code="generation_failed"))
    choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]}, "finish_reason": finish[i],
                "logprobs": None} for i in range(job.n)]
    return JSONResponse({**head, "object": "chat.completion", "choices": choices, "usage": _usage(job, completion)})


def create_app(served: dict[str, Served], options: ServerOptions) -> FastAPI:
    app = FastAPI(title="vlmdpo", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())

    def guard(request: Request) -> None:
        if options.api_key and not _authorized(request, options.api_key):
            raise ApiError(401, "missing or wrong API key; send the header 'Authorization: Bearer <key>' with the key "
                           "the server was started with", code="invalid_api_key")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error_response(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}; this "
                                       "server has GET /health, GET /v1/models, POST /v1/chat/completions",
                                       code="not_found" if exc.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        return error_response(ApiError(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error"))

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(served)}

    @app.get("/v1/models")
    async def models(request: Request):
        guard(request)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "vlmdpo"}
                                           for name in served]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        guard(request)
        req = parse_chat_request(await _read_json(request, options.max_body_bytes))
        entry = lookup(served, req.model)
        job = await run_in_threadpool(build_job, entry, req, options)
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        job.emit = lambda event: loop.call_soon_threadsafe(queue.put_nowait, event)
        entry.engine.submit(job)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": req.model}
        if req.stream:
            return StreamingResponse(_stream(job, queue, head, req.include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return await _collect(job, queue, head, request)

    return app
