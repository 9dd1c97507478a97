"""SSE splitting, the per-event rewrite and the stream <-> completion converters."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from vte_proxy.shaping import ChatAssembler, StreamWatcher, synthesize
from vte_proxy.sse import DONE, data_of, split_events


async def collect(parts: list[bytes]) -> list[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for p in parts:
            yield p

    return [ev async for batch in split_events(gen()) for ev in batch]


async def test_split_events_handles_events_split_across_chunks_and_crlf() -> None:
    raw = b'data: {"a":1}\r\n\r\nevent: x\r\ndata: {"b":2}\r\n\r\ndata: [DONE]\r\n\r\n'
    parts = [raw[i:i + 7] for i in range(0, len(raw), 7)]
    assert await collect(parts) == [b'data: {"a":1}', b'event: x\ndata: {"b":2}', DONE]


async def test_split_events_batches_the_complete_events_of_each_read() -> None:
    async def gen() -> AsyncIterator[bytes]:
        yield b'data: 1\n\ndata: 2\n\nda'
        yield b'ta: 3\n\n'

    assert [b async for b in split_events(gen())] == [[b"data: 1", b"data: 2"], [b"data: 3"]]


async def test_split_events_drops_an_incomplete_last_event() -> None:
    assert await collect([b'data: {"a":1}\n\ndata: {"b"']) == [b'data: {"a":1}']


def test_watcher_rewrites_model_without_decoding_and_notes_finish() -> None:
    w = StreamWatcher("team/gpt", "gpt-4o", keep_usage=False)
    out = w.process(b'data: {"model":"gpt-4o","choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}]}')
    assert out == b'data: {"model":"team/gpt","choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}]}'
    assert w.finished and not w.done
    assert w.process(DONE) == DONE and w.done


def test_watcher_handles_spaced_json_and_unknown_model_names() -> None:
    w = StreamWatcher("p/m", "m", keep_usage=True)
    assert json.loads(data_of(w.process(b'data: {"model": "m", "x": 1}')) or b"")["model"] == "p/m"
    # A dated name the upstream chose: decoded once, then learnt and replaced cheaply.
    assert json.loads(data_of(w.process(b'data: {"model":"m-2024","x":2}')) or b"")["model"] == "p/m"
    assert w.process(b'data: {"model":"m-2024","x":3}') == b'data: {"model":"p/m","x":3}'


def test_watcher_drops_the_usage_chunk_unless_the_client_asked() -> None:
    usage_chunk = b'data: {"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}'
    dropper = StreamWatcher("p/m", "m", keep_usage=False)
    assert dropper.process(usage_chunk) is None
    assert dropper.usage == {"prompt_tokens": 1, "completion_tokens": 2}
    keeper = StreamWatcher("p/m", "m", keep_usage=True)
    kept = keeper.process(usage_chunk)
    assert kept is not None and orjson.loads(data_of(kept) or b"")["model"] == "p/m"


def test_watcher_reads_responses_api_usage_and_completion() -> None:
    w = StreamWatcher("p/m", "m", keep_usage=True)
    ev = (b'event: response.completed\ndata: {"type":"response.completed","response":{"model":"m",'
          b'"usage":{"input_tokens":3,"output_tokens":4}}}')
    out = w.process(ev)
    assert out is not None and out.startswith(b"event: response.completed\ndata: ")
    assert orjson.loads(data_of(out) or b"")["response"]["model"] == "p/m"
    assert w.usage == {"input_tokens": 3, "output_tokens": 4} and w.finished


def test_watcher_leaves_events_alone_when_names_match() -> None:
    w = StreamWatcher("gpt-4o", "gpt-4o", keep_usage=True)
    ev = b'data: {"model":"gpt-4o","choices":[]}'
    assert w.process(ev) is ev


def _chunks_of(events: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(data_of(e) or b"") for e in events if e != DONE]


messages = st.fixed_dictionaries({
    "content": st.one_of(st.none(), st.text(max_size=40)),
    "tool_calls": st.lists(st.fixed_dictionaries({
        "id": st.text(alphabet="abcdef0123456789", min_size=1, max_size=8).map(lambda s: "call_" + s),
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
                                           "arguments": st.text(max_size=30)})}), max_size=3),
})


@settings(max_examples=150, deadline=None)
@given(msg=messages, finish=st.sampled_from(["stop", "length", "tool_calls", "content_filter"]),
       usage=st.booleans())
def test_synthesised_stream_assembles_back_to_the_same_completion(msg: dict[str, Any], finish: str,
                                                                   usage: bool) -> None:
    message: dict[str, Any] = {"role": "assistant", "content": msg["content"] or None}
    if msg["tool_calls"]:
        message["tool_calls"] = msg["tool_calls"]
    original = {"id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "up",
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    events = synthesize(original, "p/up", include_usage=usage)
    assert events[-1] == DONE
    chunks = _chunks_of(events)
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "p/up" for c in chunks)
    assert (chunks[-1]["choices"] == []) is usage
    asm = ChatAssembler("up")
    for c in chunks:
        asm.add(c)
    rebuilt = asm.result("p/up")
    assert rebuilt["choices"][0]["message"]["content"] == message["content"]
    assert rebuilt["choices"][0]["message"].get("tool_calls") == message.get("tool_calls")
    assert rebuilt["choices"][0]["finish_reason"] == finish
    assert rebuilt["id"] == "chatcmpl-1" and rebuilt["model"] == "p/up"
    assert ("usage" in rebuilt) is usage


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(st.text(max_size=10), min_size=1, max_size=20), cuts=st.lists(st.integers(1, 50), max_size=10))
async def test_split_and_watch_preserve_content_however_the_bytes_are_cut(pieces: list[str], cuts: list[int]) -> None:
    raw = b"".join(b"data: " + orjson.dumps({"model": "m", "choices": [{"index": 0, "delta": {"content": p}}]})
                   + b"\n\n" for p in pieces) + b"data: [DONE]\n\n"
    parts, pos = [], 0
    for c in cuts:
        parts.append(raw[pos:pos + c])
        pos += c
    parts.append(raw[pos:])
    w = StreamWatcher("x/m", "m", keep_usage=False)
    out = [w.process(e) for e in await collect(parts)]
    assert out[-1] == DONE
    got = "".join(orjson.loads(data_of(e) or b"")["choices"][0]["delta"]["content"] for e in out[:-1] if e)
    assert got == "".join(pieces)
