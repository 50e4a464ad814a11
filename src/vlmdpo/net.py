"""A free local TCP port: for `vlmdpo serve` in a thread, the studio's workers and the tests' servers."""
from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
