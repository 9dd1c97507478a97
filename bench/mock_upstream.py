"""A minimal zero-delay OpenAI upstream in Python (the fallback when nginx is not installed).

Two ports, like ``nginx-mock.conf``: one answers ``POST /v1/chat/completions`` with a fixed
``chat.completion``, the other with the fixed 22-event SSE stream; both answer
``GET /v1/models``. A raw asyncio protocol (uvloop when installed) with keep-alive and
pipelining: tens of thousands of requests/s on one core, far above what a Python gateway
asks of it, so it is not the bottleneck of a gateway measurement.

    python bench/mock_upstream.py --json-port 18101 --sse-port 18102
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import cast

from sse_body import COMPLETION, MODELS, sse_body

MAX_HEAD = 64 * 1024


def response(status: str, content_type: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nServer: mock\r\nContent-Type: " + content_type
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


NOT_FOUND = response("404 Not Found", b"application/json", b'{"error":{"message":"not found"}}')
MODELS_REPLY = response("200 OK", b"application/json", MODELS)


class Request:
    """What a mock needs from one parsed request."""

    __slots__ = ("close", "method", "path")

    def __init__(self, method: bytes, path: bytes, close: bool) -> None:
        self.method, self.path, self.close = method, path, close


def parse(buf: bytearray) -> tuple[Request | None, int]:
    """(request, bytes consumed) for the first complete request in ``buf``, or (None, 0)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise ValueError("header too large")
        return None, 0
    head = bytes(buf[:end]).lower()
    line_end = head.find(b"\r\n")
    method, path, _ = head[:line_end if line_end >= 0 else len(head)].split(b" ", 2)
    length = 0
    i = head.find(b"\r\ncontent-length:")
    if i >= 0:
        j = head.find(b"\r\n", i + 2)
        length = int(head[i + 17:j if j >= 0 else len(head)].strip())
    total = end + 4 + length
    if len(buf) < total:
        return None, 0
    close = b"\r\nconnection: close" in head
    return Request(method, path.split(b"?", 1)[0], close), total


class MockProtocol(asyncio.Protocol):
    """Answers every complete request in the buffer with a fixed reply."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        out = []
        while True:
            try:
                req, used = parse(self.buf)
            except ValueError:
                self.transport.close()
                return
            if req is None:
                break
            del self.buf[:used]
            if req.path == b"/v1/chat/completions" and req.method == b"post":
                out.append(self.answer)
            elif req.path == b"/v1/models" and req.method == b"get":
                out.append(MODELS_REPLY)
            else:
                out.append(NOT_FOUND)
            if req.close:
                self.transport.write(b"".join(out))
                self.transport.close()
                return
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))


def use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(host: str, json_port: int, sse_port: int) -> None:
    loop = asyncio.get_running_loop()
    json_reply = response("200 OK", b"application/json", COMPLETION)
    sse_reply = response("200 OK", b"text/event-stream", sse_body())
    servers = [await loop.create_server(lambda: MockProtocol(json_reply), host, json_port, backlog=4096),
               await loop.create_server(lambda: MockProtocol(sse_reply), host, sse_port, backlog=4096)]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--json-port", type=int, default=18101)
    ap.add_argument("--sse-port", type=int, default=18102)
    args = ap.parse_args()
    use_uvloop()
    asyncio.run(serve(args.host, args.json_port, args.sse_port))


if __name__ == "__main__":
    main()
