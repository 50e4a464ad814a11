"""Images: where a row's image value points (resolve), whether it is usable (check), and
the RGB pixels a model sees (load). Also a pixel digest for round-trip equality.

`check_image` is on the hot path of `vlmdpo data check` (100k rows sharing a few thousand
files), so it reads headers only and caches its answer per path.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import os
import re
import urllib.request
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from PIL import Image, ImageOps, UnidentifiedImageError

from vlmdpo.data.remote import RemoteImageError, fetch
from vlmdpo.errors import FixableError
from vlmdpo.types import ImageRef

# PIL raises at twice its MAX_IMAGE_PIXELS; we use that same threshold as our hard limit and
# never let PIL's softer warning reach the user.
DEFAULT_MAX_IMAGE_PIXELS = 2 * 89_478_485
_max_image_pixels = DEFAULT_MAX_IMAGE_PIXELS

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,(?P<payload>.*)$", re.S)

REMOTE_FIX = "set allow_remote_images: true (CLI: --allow-remote-images), or download the images and use local paths"


class ImageSpecError(FixableError):
    """A row's image value cannot name an image at all (before any file is touched).
    Printed without its fix: row errors carry the fix in their own field."""

    def __str__(self) -> str:
        return self.message


class ImageLoadError(FixableError):
    """An image could not be read or decoded; the message names the image and the reason."""


def set_max_image_pixels(limit: int | None) -> None:
    """Decompression-bomb limit (width * height); None restores the default."""
    global _max_image_pixels
    _max_image_pixels = DEFAULT_MAX_IMAGE_PIXELS if limit is None else int(limit)
    # PIL refuses at 2 * its own limit before we get to look; keep it out of our way.
    pil_limit = Image.MAX_IMAGE_PIXELS
    if pil_limit is not None and _max_image_pixels > 2 * pil_limit:
        Image.MAX_IMAGE_PIXELS = _max_image_pixels // 2 + 1
    _header_cache.clear()


# ---------------------------------------------------------------------------------------- resolve
def resolve_image(value: Any, *, base_dir: Path | None = None, image_root: Path | None = None,
                  allow_remote: bool = False, path_map: Mapping[str, str] | None = None) -> ImageRef:
    """Turn a row's image (or video) value into an ImageRef; no file I/O (check_image does that).
    `path_map` re-homes absolute paths: {old prefix: new prefix} (config key image_path_map)."""
    if path_map:  # every resolved file path under an old prefix, relative ones included
        return _remapped(resolve_image(value, base_dir=base_dir, image_root=image_root, allow_remote=allow_remote),
                         path_map)
    if isinstance(value, ImageRef):
        return value
    if isinstance(value, Image.Image):
        return ImageRef(pil=value, origin=f"<PIL image {value.width}x{value.height} {value.mode}>")
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return _resolve_str(value, base_dir=base_dir, image_root=image_root, allow_remote=allow_remote)
    if isinstance(value, dict):
        return _resolve_dict(value, base_dir=base_dir, image_root=image_root, allow_remote=allow_remote)
    raise ImageSpecError(
        f"image value of type {type(value).__name__} is not an image reference",
        "give a file path, a data:image/...;base64 URI, a URL, or a {'bytes': ..., 'path': ...} dict",
    )


def _resolve_str(value: str, *, base_dir, image_root, allow_remote) -> ImageRef:
    text = value.strip()
    if not text:
        raise ImageSpecError("image path is empty", "put the image's file path (relative to the data file) here")
    if text.startswith("data:"):
        return _resolve_data_uri(text)
    scheme = _SCHEME.match(text)
    if scheme:
        name = scheme.group(1).lower()
        if name in ("http", "https"):
            if not allow_remote:
                raise ImageSpecError(f"image is a remote URL ({_short(text)}) but remote images are off", REMOTE_FIX)
            return ImageRef(url=text, origin=text)
        if name == "file":
            local = urllib.request.url2pathname(text[len("file://"):])
            return ImageRef(path=os.path.abspath(local), origin=value)
        raise ImageSpecError(f"image URL scheme '{name}://' is not supported ({_short(text)})",
                             "use a local path, or an http(s) URL with remote images allowed")
    path = os.path.expanduser(text)
    if not os.path.isabs(path):
        root = image_root if image_root is not None else base_dir
        path = os.path.join(os.fspath(root), path) if root is not None else path
    return ImageRef(path=os.path.abspath(path), origin=value)


def remap_path(path: str, path_map: Mapping[str, str]) -> str:
    """`path` with its longest matching old prefix (whole folder names) replaced by the new one."""
    for old in sorted(path_map, key=len, reverse=True):
        base = old.rstrip("/")
        if path == base or path.startswith(base + "/"):
            return os.path.join(os.path.expanduser(path_map[old]), path[len(base):].lstrip("/"))
    return path


def _remapped(ref: ImageRef, path_map: Mapping[str, str]) -> ImageRef:
    if ref.path is None:
        return ref
    path = remap_path(ref.path, path_map)
    return ref if path == ref.path else replace(ref, path=os.path.abspath(path))


def _resolve_data_uri(text: str) -> ImageRef:
    m = _DATA_URI.match(text)
    if not m:
        raise ImageSpecError(f"data URI is not base64 image data ({_short(text)})",
                             "use the form data:image/png;base64,<base64 bytes>")
    mime = (m.group("mime") or "").lower()
    if mime and not mime.startswith("image/"):
        raise ImageSpecError(f"data URI has media type '{mime}', not an image", "embed an image/png or image/jpeg")
    payload = re.sub(r"\s+", "", m.group("payload"))
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageSpecError(f"data URI holds invalid base64 ({e})", "re-encode the image with base64") from None
    if not data:
        raise ImageSpecError("data URI holds no bytes", "embed the image's bytes after 'base64,'")
    return ImageRef(data=data, origin=f"data:{mime or 'image'};base64 ({len(data)} bytes)")


def _resolve_dict(value: dict, *, base_dir, image_root, allow_remote) -> ImageRef:
    raw, path = value.get("bytes"), value.get("path")
    if isinstance(raw, str):  # bytes that went through JSON as base64 text
        try:
            raw = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ImageSpecError("image dict 'bytes' is a string that is not base64",
                                 "store raw bytes, or base64 text, or give 'path' instead") from None
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    if isinstance(raw, bytes) and raw:
        return ImageRef(data=raw, origin=str(path) if path else f"<{len(raw)} bytes>")
    if isinstance(path, str) and path.strip():
        return _resolve_str(path, base_dir=base_dir, image_root=image_root, allow_remote=allow_remote)
    raise ImageSpecError("image dict has neither 'bytes' nor 'path'",
                         "a datasets Image value needs its bytes or a file path")


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


# ------------------------------------------------------------------------------------------ check
# (path, decode) -> (mtime_ns, size, message or None, (w, h) or None); many rows share a file.
_header_cache: dict[tuple[str, bool], tuple[int, int, str | None, tuple[int, int] | None]] = {}


def check_image(ref: ImageRef, *, decode: bool = False, allow_remote: bool = False) -> str | None:
    """None when the image is usable, else a message naming it and what is wrong.

    Header mode (default) opens the header only: missing, empty, not an image, too many
    pixels. decode=True also decodes the pixels, which catches truncated files.
    """
    message, _ = _inspect(ref, decode=decode, allow_remote=allow_remote)
    return message


def image_size(ref: ImageRef, *, allow_remote: bool = False) -> tuple[int, int] | None:
    """(width, height) from the header, before EXIF rotation; None if unusable."""
    _, size = _inspect(ref, decode=False, allow_remote=allow_remote)
    return size


def _inspect(ref: ImageRef, *, decode: bool, allow_remote: bool) -> tuple[str | None, tuple[int, int] | None]:
    if ref.pil is not None:
        return _check_pixels(ref, ref.pil.width, ref.pil.height), (ref.pil.width, ref.pil.height)
    if ref.data is not None:
        return _check_bytes(ref, ref.data, decode)
    if ref.url is not None:
        if not allow_remote:
            return f"image is a remote URL ({_short(ref.url)}) but remote images are off", None
        try:
            data = _fetch(ref.url)
        except ImageLoadError as e:
            return str(e), None
        return _check_bytes(ref, data, decode)
    if ref.path is None:
        return "image reference is empty", None
    return _check_path(ref, decode)


def _check_path(ref: ImageRef, decode: bool) -> tuple[str | None, tuple[int, int] | None]:
    path = ref.path
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"image not found: {path}{_said(ref)}", None
    except OSError as e:
        return f"image cannot be read: {path} ({e.strerror})", None
    key = (path, decode)
    hit = _header_cache.get(key)
    if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
        return hit[2], hit[3]
    if st.st_size == 0:
        result: tuple[str | None, tuple[int, int] | None] = (f"image file is empty (0 bytes): {path}", None)
    elif os.path.isdir(path):
        result = (f"image path is a directory, not a file: {path}", None)
    else:
        try:
            with open(path, "rb") as fh:
                result = _check_stream(ref, fh, decode)
        except OSError as e:
            result = (f"image cannot be read: {path} ({e.strerror})", None)
    _header_cache[key] = (st.st_mtime_ns, st.st_size, result[0], result[1])
    return result


def _check_bytes(ref: ImageRef, data: bytes, decode: bool) -> tuple[str | None, tuple[int, int] | None]:
    if not data:
        return f"image {ref.describe()} has no bytes", None
    return _check_stream(ref, io.BytesIO(data), decode)


def _check_stream(ref: ImageRef, fh, decode: bool) -> tuple[str | None, tuple[int, int] | None]:
    name = ref.describe()
    try:
        im = _open(fh, name)
    except ImageLoadError as e:
        return str(e), None
    with im:
        size = (im.width, im.height)
        message = _check_pixels(ref, *size)
        if message is None and decode:
            try:
                im.load()
            except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for bad data
                message = f"image is corrupt or truncated: {name} ({_reason(e)})"
    return message, size


def _check_pixels(ref: ImageRef, width: int, height: int) -> str | None:
    if width * height > _max_image_pixels:
        return (f"image is too large: {ref.describe()} is {width}x{height} = {width * height:,} pixels, over the "
                f"decompression-bomb limit of {_max_image_pixels:,}; downscale it or raise the limit")
    return None


def _open(fh, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fh)
    except Image.DecompressionBombError:
        raise ImageLoadError(f"image is too large: {name} exceeds the decompression-bomb limit of "
                             f"{_max_image_pixels:,} pixels; downscale it or raise the limit") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"not an image (unknown or corrupt file format): {name}") from None
    except Exception as e:  # a broken header can raise nearly anything inside PIL's plugins
        raise ImageLoadError(f"image header cannot be read: {name} ({_reason(e)})") from None


def _said(ref: ImageRef) -> str:
    return f" (the row says '{ref.origin}')" if ref.origin and ref.origin != ref.path else ""


def _reason(e: BaseException) -> str:
    return str(e) or type(e).__name__


# ------------------------------------------------------------------------------------------- load
def load_image(ref: ImageRef, *, max_pixels: int | None = None, min_pixels: int | None = None,
               allow_remote: bool = False) -> Image.Image:
    """The RGB image a model sees: EXIF orientation applied, area-resized into [min, max] pixels."""
    im = _decode(ref, allow_remote=allow_remote)
    return resize_area(im, max_pixels=max_pixels, min_pixels=min_pixels)


def _decode(ref: ImageRef, *, allow_remote: bool) -> Image.Image:
    """Full decode, orientation and RGB conversion, no resizing."""
    if ref.pil is not None:
        return _finish(ref, ref.pil)
    message, _ = _inspect(ref, decode=False, allow_remote=allow_remote)
    if message is not None:
        raise ImageLoadError(message)
    if ref.path is not None:
        with open(ref.path, "rb") as fh:  # decoded before the file closes; no handle outlives the call
            return _finish(ref, _open(fh, ref.describe()))
    data = ref.data if ref.data is not None else _fetch(ref.url)
    return _finish(ref, _open(io.BytesIO(data), ref.describe()))


def _finish(ref: ImageRef, im: Image.Image) -> Image.Image:
    too_big = _check_pixels(ref, im.width, im.height)
    if too_big:
        raise ImageLoadError(too_big)
    try:
        im.load()
        im = ImageOps.exif_transpose(im) or im
        return to_rgb(im)
    except ImageLoadError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for bad pixel data
        raise ImageLoadError(f"image is corrupt or truncated: {ref.describe()} ({_reason(e)})") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to RGB; transparency composited on white, 16/32-bit scaled to 8 bits."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _wide_to_rgb(im)
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    elif mode in ("LA", "PA", "La", "RGBa", "RGBA"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    try:
        return im.convert("RGB")
    except ValueError as e:
        raise ImageLoadError(f"image mode {mode} cannot be converted to RGB ({e})") from None


def _wide_to_rgb(im: Image.Image) -> Image.Image:
    import numpy as np  # only for the rare 16/32-bit images

    arr = np.asarray(im).astype(np.float64)
    if im.mode.startswith("I;16"):
        scale = 255.0 / 65535.0  # the format's full range, not the image's own maximum
    elif im.mode == "F":
        scale = 255.0 if arr.size and arr.max() <= 1.0 else 1.0
    else:  # "I": often a 16-bit PNG opened by older decoders; 8-bit data stays as it is
        peak = arr.max() if arr.size else 0
        scale = 1.0 if peak <= 255 else (255.0 / 65535.0 if peak <= 65535 else 255.0 / peak)
    out = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L").convert("RGB")


def resize_area(im: Image.Image, *, max_pixels: int | None = None, min_pixels: int | None = None) -> Image.Image:
    """Scale both sides by one factor so that width*height lands in [min_pixels, max_pixels]."""
    w, h = im.size
    area = w * h
    if max_pixels is not None and area > max_pixels:
        f = math.sqrt(max_pixels / area)
        nw, nh = max(1, math.floor(w * f)), max(1, math.floor(h * f))
    elif min_pixels is not None and area < min_pixels:
        f = math.sqrt(min_pixels / area)
        nw, nh = math.ceil(w * f), math.ceil(h * f)
    else:
        return im
    return im.resize((nw, nh), Image.Resampling.BICUBIC)


def _fetch(url: str | None) -> bytes:
    if url is None:
        raise ImageLoadError("image reference is empty")
    try:
        return fetch(url)
    except RemoteImageError as e:
        raise ImageLoadError(e.message, e.fix) from None


# ----------------------------------------------------------------------------------------- digest
def image_digest(ref: ImageRef, *, allow_remote: bool = False) -> str:
    """sha256 of the decoded RGB pixels and size: equal for the same picture in any encoding."""
    im = _decode(ref, allow_remote=allow_remote)
    h = hashlib.sha256(f"{im.width}x{im.height}:".encode())
    h.update(im.tobytes())
    return h.hexdigest()
