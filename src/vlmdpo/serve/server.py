"""`vlmdpo serve`: load the models, build the app, run uvicorn (or a background server, for tests
and benchmarks). Binding anything but the loopback address requires an API key."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from vlmdpo.net import free_port
from vlmdpo.serve.app import ServerOptions, create_app
from vlmdpo.serve.registry import ServeError, Served, load_models, parse_model_args

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class EngineOptions:
    engine: str = "transformers"  # "transformers" | "vllm"
    max_concurrency: int = 8  # rows generated together (one batch)
    max_queue: int = 64  # requests waiting beyond those; more get 429
    max_images: int = 8  # per request, for models that take several
    device: str | None = None
    dtype: str = "auto"


def check_bind(host: str, api_key: str | None) -> None:
    if host not in LOOPBACK and not api_key:
        raise ServeError(f"--host {host} exposes the model beyond this machine without a key",
                         "pass --api-key KEY (or set VLMDPO_API_KEY); clients then send 'Authorization: Bearer KEY'")


def load_served(models: list[str], engine: EngineOptions) -> dict[str, Served]:
    pairs = parse_model_args(models)
    if engine.engine == "vllm":
        from vlmdpo.serve.vllm_engine import load_vllm_models

        return load_vllm_models(pairs, engine)
    if engine.engine != "transformers":
        raise ServeError(f"--engine {engine.engine!r} is unknown", "use --engine transformers or --engine vllm")
    from vlmdpo.inference import load_for_inference
    from vlmdpo.serve.engine import TransformersEngine

    def loader(source: str):
        return load_for_inference(source, dtype=engine.dtype, device=engine.device)

    def make_engine(im) -> TransformersEngine:
        return TransformersEngine(im, max_concurrency=engine.max_concurrency, max_queue=engine.max_queue)

    return load_models(pairs, make_engine, loader=loader, image_limit=engine.max_images)


def build_app(models: list[str], engine: EngineOptions, options: ServerOptions) -> Any:
    return create_app(load_served(models, engine), options)


def serve(models: list[str], *, host: str = "127.0.0.1", port: int = 8000, engine: EngineOptions = EngineOptions(),
          options: ServerOptions = ServerOptions(), log: Any = print) -> None:
    """Serve until interrupted (Ctrl-C)."""
    import uvicorn

    check_bind(host, options.api_key)
    app = build_app(models, engine, options)
    log(f"serving {', '.join(models)} at http://{host}:{port}/v1 (OpenAI-compatible; Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


class BackgroundServer:
    """uvicorn in a daemon thread on a free local port: `with BackgroundServer(app) as url: ...`."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None):
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
