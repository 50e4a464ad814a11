"""The studio's one error shape: an HTTP status, the request field at fault, what is wrong and the fix.

app.py turns it into JSON {"error": {"field", "message", "fix"}} so a page can show it at the field.
"""
from __future__ import annotations

from vlmdpo.errors import FixableError


class StudioError(FixableError):
    def __init__(self, message: str, fix: str = "", *, field: str | None = None, status: int = 400):
        super().__init__(message, fix)
        self.field, self.status = field, status

    def __reduce__(self):
        return _rebuild, (self.message, self.fix, self.field, self.status)

    def payload(self) -> dict:
        return {"error": {"field": self.field, "message": self.message, "fix": self.fix}}


def _rebuild(message: str, fix: str, field: str | None, status: int) -> StudioError:
    return StudioError(message, fix, field=field, status=status)
