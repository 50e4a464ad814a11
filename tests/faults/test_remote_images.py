"""Remote images: a deadline for the whole download (a trickling server), a size cap per image
(an oversized one), and a cache bounded in bytes. Servers run on localhost in a thread."""
from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vlmdpo.data import remote
from vlmdpo.data.images import ImageLoadError, check_image, load_image, resolve_image
from vlmdpo.model.tiny import tiny_image


def _png(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    tiny_image(seed).save(buf, format="PNG")
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        body = _png(int(self.path.rsplit("/", 1)[-1].split(".")[0] or 0)) if self.path.startswith("/img/") else b""
        if self.path.startswith("/slow"):  # one byte at a time, never finishing within the deadline
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.05)
            return
        if self.path.startswith("/huge"):  # no Content-Length: only counting the bytes finds it
            self.send_response(200)
            self.end_headers()
            try:
                self.wfile.write(b"\0" * 200_000)
            except OSError:
                pass
            return
        if self.path.startswith("/declared"):
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def limits():
    before = remote.set_remote_limits(deadline_s=0.5, max_bytes=50_000, cache_bytes=3 * len(_png()) + 10)
    yield
    remote.set_remote_limits(**vars(before))


def test_a_trickling_server_hits_the_deadline_for_the_whole_download(server, limits):
    ref = resolve_image(f"{server}/slow", allow_remote=True)
    with pytest.raises(ImageLoadError) as e:  # each byte comes well within any per-read timeout
        load_image(ref, allow_remote=True)
    assert "/slow" in str(e.value) and "0.5 s deadline" in str(e.value)


@pytest.mark.parametrize("path", ["huge", "declared"])
def test_an_oversized_image_is_refused_naming_url_and_limit(server, limits, path):
    message = check_image(resolve_image(f"{server}/{path}", allow_remote=True), allow_remote=True)
    assert message is not None and f"/{path}" in message and "50,000 bytes limit" in message


def test_the_cache_is_bounded_in_bytes_not_count(server, limits):
    size = len(_png())
    for i in range(8):
        im = load_image(resolve_image(f"{server}/img/{i}.png", allow_remote=True), allow_remote=True)
        assert im.size == tiny_image(i).size
        assert remote.cached_bytes() <= remote.remote_limits().cache_bytes
    assert len(remote._cache) >= 2 and remote.cached_bytes() > size  # the most recent ones are kept
    assert f"{server}/img/7.png" in remote._cache and f"{server}/img/0.png" not in remote._cache
