"""Load on `vlmdpo serve`: requests/s, output tokens/s, p50 / p95 time-to-first-token and latency at
several concurrencies, streaming chat completions with an image, through a live server.

    python benchmarks/serve_load.py --model builtin:nano-smolvlm --concurrency 1 8 32 --requests 32

Starts the server in-process on a free local port (or measures --url, a server already running).
Each request streams; TTFT is the time to the first content token, latency to `[DONE]`.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import statistics
import time

import numpy as np
from PIL import Image


def image_uri(seed: int, side: int = 96) -> str:
    pixels = np.random.RandomState(seed).randint(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def one(client, model: str, i: int, max_tokens: int) -> tuple[float, float, int]:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_uri(i % 8)}},
                                             {"type": "text", "text": f"Describe picture number {i}."}]}]
    start, first = time.perf_counter(), None
    stream = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                  temperature=0, stream=True, stream_options={"include_usage": True})
    tokens = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    end = time.perf_counter()
    return (first or end) - start, end - start, tokens


async def level(url: str, model: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
    gate = asyncio.Semaphore(concurrency)

    async def gated(i: int):
        async with gate:
            return await one(client, model, i, max_tokens)

    start = time.perf_counter()
    results = await asyncio.gather(*(gated(i) for i in range(requests)))
    wall = time.perf_counter() - start
    await client.close()
    ttft, latency, tokens = zip(*results)

    def p95(xs):
        return float(np.percentile(xs, 95))

    return {"concurrency": concurrency, "requests": requests, "req_s": requests / wall, "tok_s": sum(tokens) / wall,
            "ttft_p50": statistics.median(ttft), "ttft_p95": p95(ttft), "lat_p50": statistics.median(latency),
            "lat_p95": p95(latency)}


def table(rows: list[dict]) -> str:
    lines = ["| concurrency | requests | requests/s | output tokens/s | TTFT p50 (s) | TTFT p95 (s) | latency p50 (s) "
             "| latency p95 (s) |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['concurrency']} | {r['requests']} | {r['req_s']:.2f} | {r['tok_s']:.1f} | "
                     f"{r['ttft_p50']:.2f} | {r['ttft_p95']:.2f} | {r['lat_p50']:.2f} | {r['lat_p95']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:nano-smolvlm")
    parser.add_argument("--url", help="measure a server already running (its --model name is --model)")
    parser.add_argument("--engine", default="transformers", choices=("transformers", "vllm"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-concurrency", type=int, default=8, help="the server's batch size")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    async def measure(url: str) -> list[dict]:
        await level(url, args.model, 1, 2, args.max_tokens)  # warm-up
        return [await level(url, args.model, c, max(args.requests, c), args.max_tokens) for c in args.concurrency]

    if args.url:
        rows = asyncio.run(measure(args.url.rstrip("/")))
    else:
        from vlmdpo.serve.app import ServerOptions, create_app
        from vlmdpo.serve.server import BackgroundServer, EngineOptions, load_served

        engine = EngineOptions(engine=args.engine, max_concurrency=args.max_concurrency, max_queue=1024)
        served = load_served([args.model], engine)
        with BackgroundServer(create_app(served, ServerOptions())) as url:
            rows = asyncio.run(measure(url))
    print(table(rows))


if __name__ == "__main__":
    main()
