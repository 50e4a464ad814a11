"""Remote images (http/https, only with allow_remote_images): each download is bounded in bytes
and in wall-clock time, and the downloads are kept in memory within a byte budget.

The deadline covers the whole download, not each read: a server that trickles one byte every
few seconds never trips a per-read socket timeout, so each read is given only the time left.
"""
from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, replace

from vlmdpo.errors import FixableError

_MIB = 2**20
_CHUNK = 64 * 1024


class RemoteImageError(FixableError):
    """An image URL that could not be downloaded within the limits; names the URL and the limit."""


@dataclass(frozen=True)
class RemoteLimits:
    max_bytes: int = 64 * _MIB  # one image
    deadline_s: float = 30.0  # one download, connecting included
    cache_bytes: int = 256 * _MIB  # all kept downloads together


_limits = RemoteLimits()
_cache: OrderedDict[str, bytes] = OrderedDict()  # least recently used first
_cached_bytes = 0


def remote_limits() -> RemoteLimits:
    return _limits


def set_remote_limits(**changes) -> RemoteLimits:
    """Change some limits (max_bytes, deadline_s, cache_bytes); returns the previous ones.
    The cache is emptied, so its budget holds from here on."""
    global _limits
    before, _limits = _limits, replace(_limits, **changes)
    clear_cache()
    return before


def clear_cache() -> None:
    global _cached_bytes
    _cache.clear()
    _cached_bytes = 0


def cached_bytes() -> int:
    return _cached_bytes


def fetch(url: str) -> bytes:
    """The bytes at `url`, from the cache when there; RemoteImageError past a limit or on failure."""
    hit = _cache.get(url)
    if hit is not None:
        _cache.move_to_end(url)
        return hit
    limits = _limits
    data = _download(url, limits)
    _keep(url, data, limits.cache_bytes)
    return data


def _download(url: str, limits: RemoteLimits) -> bytes:
    fix = "check the URL, or download the images and use local paths"
    deadline = time.monotonic() + limits.deadline_s
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "vlmdpo"})
        with urllib.request.urlopen(req, timeout=limits.deadline_s) as resp:
            declared = resp.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limits.max_bytes:
                raise _too_big(url, limits, f"it declares {int(declared):,} bytes")
            chunks, size = [], 0
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                _read_timeout(resp, left)
                chunk = resp.read1(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limits.max_bytes:
                    raise _too_big(url, limits, "it sent more")
                chunks.append(chunk)
    except RemoteImageError:
        raise
    except urllib.error.HTTPError as e:
        raise RemoteImageError(f"image URL returned HTTP {e.code}: {url}", fix) from None
    except (TimeoutError, socket.timeout):
        raise _late(url, limits) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise _late(url, limits) from None
        raise RemoteImageError(f"image URL could not be fetched: {url} ({reason})", fix) from None
    return b"".join(chunks)


def _read_timeout(resp, seconds: float) -> None:
    # http.client keeps the socket in resp.fp.raw._sock (CPython); without it the timeout given to
    # urlopen still bounds each read, and the loop checks the deadline between reads
    sock = getattr(getattr(resp.fp, "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def _too_big(url: str, limits: RemoteLimits, why: str) -> RemoteImageError:
    return RemoteImageError(f"image URL is over the {_size(limits.max_bytes)} limit per image ({why}): {url}",
                            "download and downscale the image and use a local path")


def _late(url: str, limits: RemoteLimits) -> RemoteImageError:
    return RemoteImageError(f"image URL did not finish downloading within the {limits.deadline_s:g} s deadline: {url}",
                            "check that the server answers, or download the images and use local paths")


def _size(n: int) -> str:
    return f"{n / _MIB:g} MiB" if n >= _MIB else f"{n:,} bytes"


def _keep(url: str, data: bytes, budget: int) -> None:
    global _cached_bytes
    if len(data) > budget:
        return
    _cache[url] = data
    _cached_bytes += len(data)
    while _cached_bytes > budget:
        _, old = _cache.popitem(last=False)
        _cached_bytes -= len(old)
