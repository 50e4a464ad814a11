"""Fixtures for tests/data; the helpers live in data_helpers.py (a unique module name, so
test folders do not shadow each other's helpers)."""
from data_helpers import *  # noqa: F401,F403
