"""One record as the model will see it: roles, text, and where each image sits (with its
size), as plain text for the terminal or as a self-contained HTML page.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

from vlmdpo.errors import FixableError
from vlmdpo.types import ImageRef, Message, PreferenceRecord, RowError

HTML_MAX_SIDE = 768
VIDEO_EMBED_BYTES = 8 << 20
_VIDEO_MIME = {".webm": "video/webm", ".mkv": "video/x-matroska", ".mov": "video/quicktime", ".ogv": "video/ogg"}


class RowNotFound(FixableError):
    """The asked-for row does not exist, or holds no valid record."""


# ------------------------------------------------------------------------------------------- text
def render_text(record: PreferenceRecord, *, allow_remote: bool = False) -> str:
    from vlmdpo.data.images import image_size
    from vlmdpo.data.videos import check_video

    def label(refs: list[ImageRef], i: int) -> str:
        if i >= len(refs):
            return f"<image {i}: no image given>"
        size = image_size(refs[i], allow_remote=allow_remote)
        return f"<image {i}: {size[0]}x{size[1]}>" if size else f"<image {i}: unreadable>"

    def messages(msgs: list[Message], refs: list[ImageRef], start: int = 0) -> tuple[list[str], int]:
        lines, k, v = [], start, 0
        for m in msgs:
            pieces = []
            for p in _parts(m):
                if p["type"] == "image":
                    pieces.append(label(refs, k))
                    k += 1
                elif p["type"] == "text":
                    pieces.append(p["text"])
                elif p["type"] == "video":
                    pieces.append(f"<video {v}>")
                    v += 1
                else:
                    pieces.append(f"<{p['type']}>")
            lines.append(f"[{m.get('role')}] " + "".join(pieces))
        return lines, k

    where = f" ({record.source})" if record.source else ""
    out = [f"record {record.id}{where}"]
    for name, refs in (("images", record.images), ("rejected_images", record.rejected_images or [])):
        for i, ref in enumerate(refs):
            size = image_size(ref, allow_remote=allow_remote)
            out.append(f"{name}[{i}]: {ref.describe()} " + (f"{size[0]}x{size[1]}" if size else "(unreadable)"))
    for i, ref in enumerate(record.videos):
        problem = check_video(ref)
        out.append(f"videos[{i}]: {ref.describe()}" + (f" (unreadable: {problem})" if problem else ""))
    prompt_lines, _ = messages(record.prompt, record.images)
    out += ["--- prompt ---", *prompt_lines, "--- chosen ---", *messages(record.chosen, record.images)[0]]
    out.append("--- rejected ---" + (" (the prompt's images are replaced by rejected_images)"
                                     if record.rejected_images is not None else ""))
    out += messages(record.rejected, record.images)[0]
    if record.meta:
        out.append("meta: " + json.dumps(record.meta, ensure_ascii=False, default=repr))
    return "\n".join(out)


def _parts(message: Message) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [{"type": p.get("type", "text"), "text": p.get("text") or ""} for p in content or []]


# ------------------------------------------------------------------------------------------- html
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
.msg{border-left:4px solid #999;margin:.6em 0;padding:.4em .8em;background:#f7f7f7;white-space:pre-wrap}
.system{border-color:#888}.user{border-color:#2a6fdb}.assistant{border-color:#777}
.role{font-size:.75em;text-transform:uppercase;color:#666;display:block}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1.5em}
.chosen .msg{border-color:#1a8f3c;background:#eef8f0}.rejected .msg{border-color:#c0392b;background:#fbeeee}
figure{margin:.4em 0}img{max-width:100%;height:auto;border:1px solid #ccc}
figcaption{font-size:.8em;color:#555}.meta{font-size:.8em;color:#555;white-space:pre-wrap}
"""


def render_html(record: PreferenceRecord, *, allow_remote: bool = False, max_side: int = HTML_MAX_SIDE,
                html_dir: Path | None = None) -> str:
    """A self-contained page: prompt on top, chosen and rejected side by side, images inline; videos
    play inline (embedded up to VIDEO_EMBED_BYTES, larger ones linked relative to `html_dir`)."""
    cache: dict[int, str] = {}

    def figure(refs: list[ImageRef], i: int, label: str) -> str:
        if i >= len(refs):
            return f"<figure><figcaption>{label} {i}: no image given</figcaption></figure>"
        key = id(refs[i])
        if key not in cache:
            cache[key] = _figure(refs[i], f"{label} {i}", allow_remote, max_side)
        return cache[key]

    def block(msgs: list[Message], refs: list[ImageRef], label: str) -> str:
        out, k, v = [], 0, 0
        for m in msgs:
            role = html.escape(str(m.get("role")))
            body = []
            for p in _parts(m):
                if p["type"] == "image":
                    body.append(figure(refs, k, label))
                    k += 1
                elif p["type"] == "video":
                    body.append(_video_figure(record.videos, v, html_dir))
                    v += 1
                elif p["type"] == "text":
                    body.append(html.escape(p["text"]))
                else:
                    body.append(html.escape(f"<{p['type']}>"))
            out.append(f'<div class="msg {role}"><span class="role">{role}</span>{"".join(body)}</div>')
        return "\n".join(out)

    title = html.escape(f"{record.id}" + (f" ({record.source})" if record.source else ""))
    rejected_side = ""
    if record.rejected_images is not None:
        rejected_side = ("<p>The rejected answer sees different images:</p>"
                         + block(record.prompt, record.rejected_images, "rejected image"))
    meta = (f'<p class="meta">meta: {html.escape(json.dumps(record.meta, ensure_ascii=False, indent=1, default=repr))}'
            "</p>" if record.meta else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{_CSS}</style></head>
<body><h1>{title}</h1>
<h2>Prompt</h2>
{block(record.prompt, record.images, "image")}
<div class="pair">
<div class="chosen"><h2>Chosen</h2>
{block(record.chosen, [], "image")}</div>
<div class="rejected"><h2>Rejected</h2>
{rejected_side}
{block(record.rejected, [], "image")}</div>
</div>
{meta}
</body></html>
"""


def _figure(ref: ImageRef, label: str, allow_remote: bool, max_side: int) -> str:
    from vlmdpo.data.images import ImageLoadError, load_image

    caption = html.escape(f"{label}: {ref.origin or ref.describe()}")
    try:
        im = load_image(ref, allow_remote=allow_remote)
    except ImageLoadError as e:
        return f"<figure><figcaption>{caption}: {html.escape(str(e))}</figcaption></figure>"
    size = f"{im.width}x{im.height}"
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    # PNG keeps small synthetic images exact; photos are far smaller as JPEG.
    fmt, mime = ("PNG", "image/png") if im.width * im.height <= 256 * 256 else ("JPEG", "image/jpeg")
    im.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<figure><img src="data:{mime};base64,{data}" alt="{caption}"><figcaption>{caption} ({size})</figcaption></figure>'


def _video_figure(refs: list[ImageRef], i: int, html_dir: Path | None) -> str:
    if i >= len(refs):
        return f"<figure><figcaption>video {i}: no video given</figcaption></figure>"
    ref = refs[i]
    caption = html.escape(f"video {i}: {ref.origin or ref.describe()}")
    mime = _VIDEO_MIME.get(Path(ref.path or "").suffix.lower(), "video/mp4")
    data = ref.data
    if data is None and ref.path is not None and _size(ref.path) <= VIDEO_EMBED_BYTES:
        data = Path(ref.path).read_bytes()
    if data is not None:
        src = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    elif ref.path is not None:
        src = Path(os.path.relpath(ref.path, html_dir)).as_posix() if html_dir else Path(ref.path).as_uri()
    else:
        src = ref.url or ""
    return (f'<figure><video controls muted loop preload="metadata" style="max-width:100%">'
            f'<source src="{html.escape(src)}" type="{mime}"></video><figcaption>{caption}</figcaption></figure>')


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return VIDEO_EMBED_BYTES + 1  # linked, so the browser shows what is missing


# ----------------------------------------------------------------------------------------- lookup
def parse_row(spec: str | int) -> tuple[str | None, int]:
    """'17' -> (None, 17); 'data/x.jsonl:17' (as `data check` prints it) -> ('data/x.jsonl', 17)."""
    text = str(spec).strip()
    file, _, num = text.rpartition(":")
    try:
        row = int(num)
    except ValueError:
        raise RowNotFound(f"--row '{spec}' is not a row number; give N or FILE:N, e.g. --row 3") from None
    if row < 1:
        raise RowNotFound(f"--row {row}: rows are numbered from 1")
    return (file or None), row


def find_record(source: Any, row: str | int, **load_kwargs: Any) -> PreferenceRecord:
    """The record read from row N (1-based, as `data check` numbers rows) of `source`.

    With several files, the first file that has row N wins; 'FILE:N' picks the file.
    """
    from vlmdpo.data.load import iter_preferences

    want_file, want = parse_row(row)
    errors: list[RowError] = []
    rows_per_file: dict[str, int] = {}
    for item in iter_preferences(source, on_invalid="skip", **load_kwargs):
        file, num = (item.file, item.row) if isinstance(item, RowError) else (
            (item.source.file, item.source.row) if item.source else ("<records>", 0))
        rows_per_file[file] = max(rows_per_file.get(file, 0), num)
        if num != want or (want_file is not None and not _same_file(file, want_file)):
            continue
        if isinstance(item, RowError):
            errors.append(item)
        else:
            return item
    if errors:
        listed = "\n".join(f"  {e}" for e in errors)
        raise RowNotFound(f"row {want} is invalid, so there is no record to show:\n{listed}")
    sizes = ", ".join(f"{f} has {n} rows" for f, n in rows_per_file.items()) or "no rows were read"
    raise RowNotFound(f"row {row} is out of range: {sizes}")


def _same_file(file: str, wanted: str) -> bool:
    return file == wanted or Path(file).resolve() == Path(wanted).resolve() or Path(file).name == wanted


def show_record(source: Any, row: str | int, *, html_path: str | Path | None = None, **load_kwargs: Any) -> str:
    """Text rendering of one row; with html_path also writes the HTML page there."""
    record = find_record(source, row, **load_kwargs)
    allow_remote = load_kwargs.get("allow_remote_images", False)
    text = render_text(record, allow_remote=allow_remote)
    if html_path is not None:
        html_dir = Path(html_path).resolve().parent
        Path(html_path).write_text(render_html(record, allow_remote=allow_remote, html_dir=html_dir), encoding="utf-8")
        text += f"\nwrote {html_path}"
    return text
