"""A slow streaming upstream for the memory run: every stream emits one chat chunk every
``--interval`` seconds for ``--duration`` seconds, then the finish and usage chunks and
``[DONE]`` (chunked transfer encoding, keep-alive). Thousands of streams at once on one
core: one asyncio task per stream, each only writing a small chunk per tick.

    python bench/slow_upstream.py --port 18103 --interval 0.1 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

from mock_upstream import MODELS_REPLY, NOT_FOUND, parse, use_uvloop
from sse_body import content_chunk, stream_head, stream_tail

HEADERS = (b"HTTP/1.1 200 OK\r\nServer: mock-slow\r\nContent-Type: text/event-stream\r\n"
           b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")


def framed(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class SlowProtocol(asyncio.Protocol):
    def __init__(self, interval: float, duration: float, stats: dict[str, int]) -> None:
        self.interval, self.duration, self.stats = interval, duration, stats
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.pending: list[bool] = []  # close-after flags of requests waiting behind a stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        while self.task is None:
            try:
                req, used = parse(self.buf)
            except ValueError:
                self.transport.close()
                return
            if req is None:
                return
            del self.buf[:used]
            if req.path == b"/v1/chat/completions" and req.method == b"post":
                self.task = asyncio.get_running_loop().create_task(self.stream(req.close))
            else:
                self.transport.write(MODELS_REPLY if req.path == b"/v1/models" else NOT_FOUND)

    async def stream(self, close: bool) -> None:
        loop = asyncio.get_running_loop()
        self.stats["started"] += 1
        self.stats["open"] += 1
        try:
            t = self.transport
            assert t is not None
            t.write(HEADERS + framed(stream_head()))
            n = max(1, round(self.duration / self.interval))
            start = loop.time()
            for i in range(n):
                await asyncio.sleep(max(0.0, start + (i + 1) * self.interval - loop.time()))
                if self.transport is None:
                    return
                t.write(framed(content_chunk(i)))
            t.write(framed(stream_tail(n)) + b"0\r\n\r\n")
            self.stats["completed"] += 1
            if close:
                t.close()
        finally:
            self.stats["open"] -= 1
            self.task = None
        if self.buf and self.transport is not None:
            self.data_received(b"")


async def serve(host: str, port: int, interval: float, duration: float) -> None:
    loop = asyncio.get_running_loop()
    stats = {"started": 0, "completed": 0, "open": 0}
    server = await loop.create_server(lambda: SlowProtocol(interval, duration, stats), host, port, backlog=8192)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18103)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--duration", type=float, default=30.0)
    args = ap.parse_args()
    use_uvloop()
    asyncio.run(serve(args.host, args.port, args.interval, args.duration))


if __name__ == "__main__":
    main()
