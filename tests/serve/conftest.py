"""A live server (uvicorn in a thread, free local port) on tiny:idefics3: the base, a random LoRA adapter,
an adapter from a real one-step training run, and that run's checkpoint-1; the adapters share one base."""
from __future__ import annotations

from pathlib import Path

import pytest

from run_helpers import one_step_run
from serve_helpers import png_bytes, random_adapter


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    return one_step_run(tmp_path_factory.mktemp("run") / "out", save_steps=1)


@pytest.fixture(scope="session")
def image_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    (root / "photo.png").write_bytes(png_bytes(3))
    return root


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory, trained_run: Path, image_root: Path):
    from vlmdpo.serve.app import ServerOptions, create_app
    from vlmdpo.serve.media import ImagePolicy
    from vlmdpo.serve.server import BackgroundServer, EngineOptions, load_served

    lora = random_adapter(tmp_path_factory.mktemp("lora") / "lora")
    served = load_served([f"lora={lora}", "base=tiny:idefics3", f"tuned={trained_run}",
                          f"ckpt={trained_run / 'checkpoint-1'}"],
                         EngineOptions(device="cpu", max_images=2, max_concurrency=8, max_queue=64))
    options = ServerOptions(max_body_bytes=256 * 1024, default_max_tokens=8, images=ImagePolicy(image_root=image_root))
    with BackgroundServer(create_app(served, options)) as url:
        yield url, served
    for entry in served.values():
        entry.engine.close()
