"""Ctrl-C / SIGTERM during training: the step in progress finishes, a checkpoint is saved, and
the run stops with the command that resumes it (exit 130 for SIGINT, 143 for SIGTERM)."""
from __future__ import annotations

import shlex
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

from vlmdpo.train.step import TrainingError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(TrainingError):
    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class StopRequest:
    """Set by the first SIGINT / SIGTERM; a second one stops at once (KeyboardInterrupt)."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.signum: int | None = None

    def _handle(self, signum, _frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        self.say(f"{signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
                 "(send it again to stop at once, without saving)")

    @contextmanager
    def installed(self) -> Iterator["StopRequest"]:
        """Handlers for the duration of the run, main thread only (Python allows no other), then the old ones."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
            signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def requested(self, acc) -> int | None:
        """The signal number when any process was asked to stop (all processes agree)."""
        if acc.num_processes == 1:
            return self.signum
        flag = torch.tensor([self.signum or 0], device=acc.device)
        got = int(acc.reduce(flag, reduction="max").item())
        return got or None


def resume_command(checkpoint: Path) -> str:
    """The command that continues this run: the same `vlmdpo train` call plus resume_from_checkpoint=auto."""
    argv = sys.argv[1:]
    if Path(sys.argv[0]).name in ("vlmdpo", "__main__.py") and "train" in argv:
        args = [a for a in argv[argv.index("train") + 1:] if not a.startswith("resume_from_checkpoint=")]
        return shlex.join(["vlmdpo", "train", *args, "resume_from_checkpoint=auto"])
    return f"vlmdpo train CONFIG output_dir={shlex.quote(str(checkpoint.parent))} resume_from_checkpoint=auto " \
           f"(or resume_from_checkpoint={shlex.quote(str(checkpoint))})"
