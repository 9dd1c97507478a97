"""Server-sent events framing: splitting a byte stream into events, reading and replacing an
event's data, writing events. Nothing here knows what the events mean; answer shaping (model
names, usage, completeness, stream <-> JSON) is :mod:`vte_proxy.shaping`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import orjson

from vte_proxy.errors import UpstreamError

DONE = b"data: [DONE]"


def event(obj: Any) -> bytes:
    """One SSE data event (without the blank line that ends it)."""
    return b"data: " + orjson.dumps(obj)


def named_event(name: str, obj: Any) -> bytes:
    """One SSE event with an ``event:`` line (Responses API, Anthropic Messages)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj)


# An upstream event larger than this is refused (502 protocol): nothing legitimate comes close,
# and the gateway must not buffer without bound while it waits for an event's end.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class EventSplitter:
    """Incremental SSE framing. Every line ending (CRLF, LF, CR) becomes LF; a blank line ends an
    event. The buffer is scanned from where the last scan stopped, so a large event costs time
    proportional to its size, never to its size times the number of reads (``scanned`` counts
    the bytes searched, for the tests)."""

    __slots__ = ("_buf", "_cr", "_scan_from", "max_event", "provider", "scanned")

    def __init__(self, provider: str, max_event: int = MAX_EVENT_BYTES) -> None:
        self.provider = provider
        self._buf = bytearray()
        self._scan_from = 0
        self._cr = False  # the last read ended in CR: a LF starting the next one is its CRLF's
        self.max_event = max_event
        self.scanned = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events that ``chunk`` completed (an incomplete last one stays buffered)."""
        if not self._buf and not self._cr and len(chunk) >= 2 and chunk.find(b"\n\n") == len(chunk) - 2 \
                and b"\r" not in chunk and len(chunk) <= self.max_event:
            # The common case, once per frame of every stream: exactly one whole event, nothing
            # buffered before it. Same result as below without the buffer's copies.
            self.scanned += len(chunk)
            ev = chunk[:-2].lstrip(b"\n")
            return [ev] if ev else []
        buf = self._buf
        buf += self._normalize(chunk)
        self.scanned += len(buf) - self._scan_from
        events: list[bytes] = []
        start = 0
        end = buf.find(b"\n\n", self._scan_from)
        while end != -1:
            self._check(end - start)
            if end > start:
                ev = bytes(buf[start:end])
                events.append(ev.lstrip(b"\n") if ev[:1] == b"\n" else ev)
            start = end + 2
            end = buf.find(b"\n\n", start)
        del buf[:start]  # cheap: bytearray drops a prefix without moving the rest
        self._check(len(buf))
        self._scan_from = max(len(buf) - 1, 0)  # a LF at the end may be the first half of a blank line
        return [ev for ev in events if ev]

    def _normalize(self, chunk: bytes) -> bytes:
        if self._cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._cr = chunk[-1:] == b"\r"
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return chunk

    def _check(self, size: int) -> None:
        if size > self.max_event:
            raise UpstreamError(self.provider, 502, f"provider {self.provider!r} sent a stream event over "
                                f"{self.max_event} bytes", "protocol")


async def split_events(chunks: AsyncIterator[bytes], provider: str, max_event: int = MAX_EVENT_BYTES,
                       redact: Callable[[bytes], bytes] | None = None) -> AsyncGenerator[list[bytes], None]:
    """Split a byte stream into SSE events, yielded as the batch of complete events each read
    brought (so the client side can send them in one write); an incomplete last event is
    dropped; an event over ``max_event`` bytes is an UpstreamError of ``provider`` (502 ``protocol``).
    ``redact`` is applied to events that carry an ``"error"`` (an upstream may quote its key there)."""
    splitter = EventSplitter(provider, max_event)
    async for chunk in chunks:
        batch = splitter.feed(chunk)
        if batch:
            yield batch if redact is None else _redacted(batch, redact)


def _redacted(batch: list[bytes], redact: Callable[[bytes], bytes]) -> list[bytes]:
    if len(batch) == 1:  # the common case, without a list comprehension per frame
        return [redact(batch[0])] if b'"error"' in batch[0] else batch
    return [redact(ev) if b'"error"' in ev else ev for ev in batch]


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
