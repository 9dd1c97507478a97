"""The guarded HTTP protocol (vte_proxy.server) on a real uvicorn, driven with raw sockets:
what a client may send before its request reaches the application, and how an endpoint hears
of a client that leaves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import AppServer, serve_app_in_thread
from vte_proxy.server import MAX_HEADERS, ON_DISCONNECT, GuardedHttpToolsProtocol

Scope = dict[str, object]


async def hello(scope: Scope, receive: object, send: object) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"hello"})  # type: ignore[operator]


@pytest.fixture(scope="module")
def server() -> Iterator[AppServer]:
    with serve_app_in_thread(hello, http=GuardedHttpToolsProtocol) as s:
        yield s


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {k.lower(): v for k, v in (ln.decode().split(": ", 1) for ln in lines[1:] if b": " in ln)}
    return int(lines[0].split()[1]), headers, body


def exchange(server: AppServer, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw``, read until the server closes or the answer is complete; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)  # may be refused mid-send: the answer is already waiting
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while part := sock.recv(65536):
                data += part
                _, headers, body = parse(data)
                if len(body) >= int(headers.get("content-length", 1 << 30)):
                    break
    return parse(data)


def request(*header_lines: bytes) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in header_lines) + b"\r\n"


def test_an_ordinary_request_passes(server: AppServer) -> None:
    status, _, body = exchange(server, request(*(b"x-h%d: v" % i for i in range(50))))
    assert (status, body) == (200, b"hello")


def test_empty_headers_count_as_whole_lines(server: AppServer) -> None:
    # 20,000 one-byte names with empty values: 20 KB of names and values, 100 KB of lines.
    status, headers, body = exchange(server, request(*[b"a:"] * 20_000))
    assert status == 431 and json.loads(body)["error"]["code"] == "headers_too_large"
    assert headers["connection"] == "close"


def test_the_number_of_headers_is_capped(server: AppServer) -> None:
    status, _, body = exchange(server, request(*(b"x-%d: 1" % i for i in range(MAX_HEADERS + 1))))
    assert status == 431 and json.loads(body)["error"]["code"] == "headers_too_large"
    status, _, _ = exchange(server, request(*(b"x-%d: 1" % i for i in range(MAX_HEADERS - 1))))
    assert status == 200


@pytest.mark.parametrize("raw", [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",
                                 b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n"])
def test_parser_errors_are_openai_shaped_json(server: AppServer, raw: bytes) -> None:
    status, headers, body = exchange(server, raw)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_http_request"


def watching(left: threading.Event, complete: bool) -> Any:
    """An endpoint that asks to hear of its client leaving, as vte_proxy.http.HttpSink does;
    ``complete``: it answers in full at once, else it holds the answer open until told."""

    async def app(scope: Scope, receive: object, send: Any) -> None:
        assert scope[ON_DISCONNECT] is None  # the protocol offers the hook on every request
        scope[ON_DISCONNECT] = left.set
        if complete:
            await hello(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(1000):
            if left.is_set():
                return
            await asyncio.sleep(0.01)

    return app


def test_a_client_leaving_mid_answer_is_told_to_the_endpoint_at_once() -> None:
    left = threading.Event()
    with serve_app_in_thread(watching(left, complete=False), http=GuardedHttpToolsProtocol) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(request())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert left.wait(5), "the endpoint was not told that its client left"


def test_a_client_leaving_after_a_complete_answer_is_not_a_disconnect() -> None:
    left = threading.Event()
    with serve_app_in_thread(watching(left, complete=True), http=GuardedHttpToolsProtocol) as server:
        status, _, body = exchange(server, request())
        assert (status, body) == (200, b"hello")
        status, _, _ = exchange(server, request())  # a round trip after the first connection closed
        assert status == 200
    assert not left.is_set()
