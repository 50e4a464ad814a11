"""Fault-injection tests: kills, signals, damaged files, stale checkpoints, unsafe pickles, export
into its own input. They reuse the helpers of tests/train and tests/inference."""
import sys
from pathlib import Path

for helpers in ("train", "inference"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / helpers))

from train_helpers import *  # noqa: E402,F401,F403
