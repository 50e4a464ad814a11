"""Fixtures for inference/chat/compare/export tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from inference_helpers import make_adapter, write_image


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    return write_image(tmp_path / "photo.png")


@pytest.fixture(scope="session")
def idefics3_adapter(tmp_path_factory) -> Path:
    return make_adapter(tmp_path_factory.mktemp("adapter") / "idefics3-lora", "idefics3")

