"""Server-sent events framing: splitting a byte stream into events, reading and replacing an
event's data, writing events. Nothing here knows what the events mean; answer shaping (model
names, usage, completeness, stream <-> JSON) is :mod:`vte_proxy.shaping`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

DONE = b"data: [DONE]"


def event(obj: Any) -> bytes:
    """One SSE data event (without the blank line that ends it)."""
    return b"data: " + orjson.dumps(obj)


def named_event(name: str, obj: Any) -> bytes:
    """One SSE event with an ``event:`` line (Responses API, Anthropic Messages)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj)


async def split_events(chunks: AsyncIterator[bytes]) -> AsyncGenerator[list[bytes], None]:
    """Split a byte stream into SSE events, yielded as the batch of complete events each read
    brought (so the client side can send them in one write); an incomplete last event is
    dropped."""
    buf = b""
    async for chunk in chunks:
        if b"\r" in chunk or buf[-1:] == b"\r":  # CRLF, possibly split between two chunks
            buf = (buf + chunk).replace(b"\r\n", b"\n")
        else:
            buf += chunk
        if b"\n\n" not in buf:
            continue
        *complete, buf = buf.split(b"\n\n")
        batch = [ev for ev in complete if ev]
        if batch:
            yield batch


def data_of(ev: bytes) -> bytes | None:
    """The data payload of an event (the common single-line case without a copy of lines)."""
    if ev.startswith(b"data:") and b"\n" not in ev:
        return ev[5:].lstrip(b" ")
    for line in ev.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:].lstrip(b" ")
    return None


def with_data(ev: bytes, payload: bytes) -> bytes:
    """``ev`` with its data payload replaced (other lines, such as ``event:``, kept)."""
    if ev.startswith(b"data:") and b"\n" not in ev:
        return b"data: " + payload
    lines = [b"data: " + payload if ln.startswith(b"data:") else ln for ln in ev.split(b"\n")]
    return b"\n".join(lines)
