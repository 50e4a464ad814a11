"""Suite-wide settings. Folder helpers live in <folder>_helpers.py modules with unique names."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Tiny models gain nothing from intra-op threads; on a small shared CPU the thread hand-offs of
    # every small matmul dominate (measured: one test folder went from 102 s to 24 s).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
