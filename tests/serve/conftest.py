"""A live server (uvicorn in a thread, free local port) on tiny:idefics3: the base, a random LoRA adapter,
an adapter from a real one-step training run, and that run's checkpoint-1; the adapters share one base."""
from __future__ import annotations

from pathlib import Path

import pytest

import vlmdpo
from serve_helpers import png_bytes, random_adapter

SAMPLES = Path(vlmdpo.__file__).parent / "samples" / "trl"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    from vlmdpo.api import train

    out = tmp_path_factory.mktemp("run") / "out"
    train({"model_name_or_path": "tiny:idefics3", "dataset": str(SAMPLES / "prefs.jsonl"), "output_dir": str(out),
           "finetuning_type": "lora", "lora_rank": 4, "lora_alpha": 8, "max_length": 512, "learning_rate": 1e-2,
           "max_steps": 1, "per_device_train_batch_size": 2, "logging_steps": 1, "save_steps": 1,
           "progress_bar": False, "beta": 0.3})
    return out


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
