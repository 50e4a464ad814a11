"""Tiny-model fixtures for the model-layer tests (CPU, fp32, milliseconds per forward)."""
from __future__ import annotations

import pytest

from vlmdpo.model.tiny import build_tiny


def pytest_configure(config):
    # peft reads transformers' deprecated `is_gradient_checkpointing`; not ours to fix
    config.addinivalue_line("filterwarnings", "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(scope="session")
def tiny_model():
    """family -> (model, processor), built once per session; do not train these."""
    cache: dict = {}

    def get(family: str):
        if family not in cache:
            cache[family] = build_tiny(family)
        return cache[family]

    return get
