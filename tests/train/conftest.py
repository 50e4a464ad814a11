"""Fixtures for tests/train; the helpers live in train_helpers.py (a unique module name, so
test folders do not shadow each other's helpers)."""
from train_helpers import *  # noqa: F401,F403
