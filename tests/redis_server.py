"""A real Debian ``redis-server`` on loopback for the limits tests (no persistence).

``.ci/run`` and ``make debs`` install it; where the binary is absent the tests that need it
are skipped with that reason, visibly, never counted as passed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support import free_port

BINARY = shutil.which("redis-server")


class RedisServer:
    """One ``redis-server --port P --save ''`` that a test may stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        assert BINARY is not None
        self.proc = subprocess.Popen([BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


def need_redis() -> None:
    if BINARY is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    need_redis()
    server = RedisServer().start()
    yield server
    server.stop()
