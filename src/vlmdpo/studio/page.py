"""The HTML shell every studio page shares: the navigation, the stylesheet and the page's own script.

Pages are rendered on the server; `esc` is the one escaper for anything that came from a user or a file.
"""
from __future__ import annotations

import html

from fastapi.responses import HTMLResponse

# (path, label): the workflow's order, left to right
NAV: tuple[tuple[str, str], ...] = (
    ("/data", "Data"), ("/train", "Train"), ("/monitor", "Monitor"),
    ("/lab", "Lab"), ("/label", "Label"), ("/deploy", "Export & deploy"),
)


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def render(title: str, body: str, *, active: str, scripts: tuple[str, ...] = ()) -> HTMLResponse:
    """A full page: `body` is trusted HTML built with `esc`; `scripts` are /static paths loaded after it."""
    nav = "".join(f'<a href="{path}"{" class=active" if path == active else ""}>{esc(label)}</a>'
                  for path, label in NAV)
    tags = "".join(f'<script src="/static/{esc(s)}"></script>' for s in ("studio.js", *scripts))
    return HTMLResponse(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{esc(title)} · vlmdpo studio</title>"
        '<link rel=stylesheet href="/static/studio.css"></head>'
        '<body>'
        f'<header><span class=brand>vlmdpo studio</span><nav>{nav}</nav></header>'
        f"<main><h1>{esc(title)}</h1>{body}</main>{tags}</body></html>")
