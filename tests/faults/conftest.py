"""Fault-injection tests: kills, signals, damaged files, stale checkpoints, unsafe pickles, export
into its own input. They reuse the tiny text-only training fixtures of tests/train."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))

from train_helpers import *  # noqa: E402,F401,F403
