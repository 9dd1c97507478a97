"""SSE framing (vte_proxy.sse): splitting a byte stream into events, reading and replacing an event's data,
writing events. What the events mean is shaping (tests/unit/test_shaping.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vte_proxy.errors import UpstreamError
from vte_proxy.sse import (
    DONE,
    MAX_EVENT_BYTES,
    EventSplitter,
    data_of,
    event,
    named_event,
    split_events,
    with_data,
)


async def collect(parts: list[bytes]) -> list[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for p in parts:
            yield p

    return [ev async for batch in split_events(gen(), "p") for ev in batch]


async def test_split_events_handles_events_split_across_chunks_and_crlf() -> None:
    raw = b'data: {"a":1}\r\n\r\nevent: x\r\ndata: {"b":2}\r\n\r\ndata: [DONE]\r\n\r\n'
    parts = [raw[i:i + 7] for i in range(0, len(raw), 7)]
    assert await collect(parts) == [b'data: {"a":1}', b'event: x\ndata: {"b":2}', DONE]


async def test_split_events_batches_the_complete_events_of_each_read() -> None:
    async def gen() -> AsyncIterator[bytes]:
        yield b'data: 1\n\ndata: 2\n\nda'
        yield b'ta: 3\n\n'

    assert [b async for b in split_events(gen(), "p")] == [[b"data: 1", b"data: 2"], [b"data: 3"]]


async def test_split_events_drops_an_incomplete_last_event() -> None:
    assert await collect([b'data: {"a":1}\n\ndata: {"b"']) == [b'data: {"a":1}']


def test_data_of_reads_single_and_multi_line_events() -> None:
    assert data_of(b'data: {"a":1}') == b'{"a":1}'
    assert data_of(b'data:{"a":1}') == b'{"a":1}'
    assert data_of(b'event: response.completed\ndata: {"b":2}') == b'{"b":2}'
    assert data_of(b": a comment") is None


def test_with_data_replaces_only_the_data_line() -> None:
    assert with_data(b'data: {"a":1}', b'{"a":2}') == b'data: {"a":2}'
    assert with_data(b'event: x\ndata: {"a":1}\nid: 7', b"{}") == b"event: x\ndata: {}\nid: 7"


def test_event_and_named_event_frame_json() -> None:
    assert event({"a": [1, "é"]}) == 'data: {"a":[1,"é"]}'.encode()
    assert named_event("response.created", {"x": 1}) == b'event: response.created\ndata: {"x":1}'
    assert DONE == b"data: [DONE]"


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(st.text(max_size=10), min_size=1, max_size=20), cuts=st.lists(st.integers(1, 50), max_size=10),
       crlf=st.booleans())
async def test_split_events_yields_the_same_events_however_the_bytes_are_cut(pieces: list[str], cuts: list[int],
                                                                              crlf: bool) -> None:
    events = [b"data: " + orjson.dumps({"content": p}) for p in pieces] + [DONE]
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    raw = sep.join(events) + sep
    parts, pos = [], 0
    for c in cuts:
        parts.append(raw[pos:pos + c])
        pos += c
    parts.append(raw[pos:])
    assert await collect(parts) == events


async def test_split_events_handles_cr_only_line_endings_however_cut() -> None:
    raw = b'data: {"a":1}\r\revent: x\rdata: {"b":2}\r\rdata: [DONE]\r\r'
    for size in (1, 2, 3, 5, len(raw)):
        parts = [raw[i:i + size] for i in range(0, len(raw), size)]
        assert await collect(parts) == [b'data: {"a":1}', b'event: x\ndata: {"b":2}', DONE], size


async def test_split_events_handles_mixed_line_endings_and_a_crlf_split_between_reads() -> None:
    assert await collect([b"data: 1\r", b"\n\r", b"\ndata: 2\n\r\ndata: 3\r\n\n"]) == [b"data: 1", b"data: 2",
                                                                                     b"data: 3"]


def test_splitter_scans_each_byte_about_once() -> None:
    # One 4 MiB event in 4 KiB reads: a splitter that re-scans its buffer on every read looks at
    # ~2 GB; this one at each byte once (plus one byte of overlap per read).
    splitter = EventSplitter("p")
    piece = b"x" * 4096
    assert splitter.feed(b"data: ") == []
    for _ in range(1024):
        assert splitter.feed(piece) == []
    assert splitter.feed(b"\n\n") == [b"data: " + piece * 1024]
    assert splitter.scanned <= 4 * 1024 * 1024 + 2 * 1030


async def test_an_event_over_the_maximum_size_is_a_protocol_error() -> None:
    splitter = EventSplitter("p", max_event=1000)
    assert splitter.feed(b"data: " + b"x" * 900) == []
    with pytest.raises(UpstreamError) as exc:
        splitter.feed(b"x" * 200)
    assert (exc.value.status, exc.value.reason) == (502, "protocol")
    with pytest.raises(UpstreamError):  # also when the oversized event arrives complete in one read
        EventSplitter("p", max_event=1000).feed(b"data: " + b"y" * 2000 + b"\n\ndata: 1\n\n")
    assert EventSplitter("p").max_event == MAX_EVENT_BYTES == 16 * 1024 * 1024
