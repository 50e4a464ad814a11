"""The one shape of a user-facing error: what is wrong, and how to fix it.

A ValueError, so the CLI reports it as bad input (one line, exit 2), never as an internal error.
"""
from __future__ import annotations


class FixableError(ValueError):
    sep = " -> "  # between the message and the fix when printed

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message, fix)  # args[0] is the bare message (readers quote it into row errors)
        self.message, self.fix = message, fix

    def __str__(self) -> str:
        return f"{self.message}{self.sep}{self.fix}" if self.fix else self.message

    def __reduce__(self):  # picklable across dataloader workers / processes
        return type(self), (self.message, self.fix)


class ModelLoadError(FixableError):
    """A model that cannot be loaded or prepared as asked (a bad name, folder, or setting)."""
