"""Answer shaping (vte_proxy.shaping): the four shapers picked by (client streams?, upstream
streams?) as pure async tests on JsonAnswer/StreamAnswer, and the pieces they are built from
(StreamWatcher, ChatAssembler, synthesize)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import chunk, completion
from vte_proxy.chat_convert import ChatAssembler, synthesize
from vte_proxy.errors import UpstreamError
from vte_proxy.providers.base import EventBatches, JsonAnswer, StreamAnswer
from vte_proxy.shaping import JsonReply, Plan, StreamReply, shape
from vte_proxy.sse import DONE, data_of, event, named_event, split_events
from vte_proxy.stream_watcher import StreamWatcher

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def plan(client_stream: bool, keep_usage: bool = False, endpoint: str = "chat/completions") -> Plan:
    return Plan(endpoint, "team/gpt", "up", "gpt-4o", client_stream, keep_usage)


class Upstream:
    """A StreamAnswer's source: the batches it yields, and whether it was closed (once)."""

    def __init__(self, *batches: list[Any]) -> None:
        self.batches = [[e if isinstance(e, bytes) else event(e) for e in b] for b in batches]
        self.closed = 0

    async def events(self) -> EventBatches:
        for batch in self.batches:
            yield batch

    async def close(self) -> None:
        self.closed += 1

    def answer(self) -> StreamAnswer:
        return StreamAnswer(self.events(), self.close, {"x-upstream": "1"})


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def drain(reply: StreamReply) -> list[bytes]:
    """Every event the client gets, as the exchange would read them (closing the reply after)."""
    out: list[bytes] = []
    try:
        async for batch in reply.events:
            out += batch
    finally:
        await reply.events.aclose()
        await reply.close()
    return out


def payloads(events: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(data_of(e) or b"") for e in events if e != DONE]


# ---------------------------------------------------------------- json -> json
async def test_json_as_json_renames_the_model_and_keeps_usage_for_accounting() -> None:
    reply = await shape(JsonAnswer(completion("gpt-4o", "hi", usage=USAGE), {"x-upstream": "1"}), plan(False))
    assert isinstance(reply, JsonReply)
    body = json.loads(reply.body)
    assert (reply.status, body["model"], body["choices"][0]["message"]["content"]) == (200, "team/gpt", "hi")
    assert reply.usage == USAGE and body["usage"] == USAGE and reply.headers == {"x-upstream": "1"}


async def test_json_as_json_renames_a_responses_api_answer() -> None:
    answer = {"id": "resp_1", "object": "response", "model": "gpt-4o", "usage": {"input_tokens": 2},
              "response": {"model": "gpt-4o"}}
    reply = await shape(JsonAnswer(answer), plan(False, endpoint="responses"))
    assert isinstance(reply, JsonReply)
    body = json.loads(reply.body)
    assert (body["model"], body["response"]["model"], reply.usage) == ("team/gpt", "team/gpt", {"input_tokens": 2})


# ---------------------------------------------------------------- stream -> json (force_stream)
async def test_stream_as_json_assembles_one_completion() -> None:
    up = Upstream([chunk("gpt-4o", {"role": "assistant", "content": ""}), chunk("gpt-4o", {"content": "Hello"})],
                  [chunk("gpt-4o", {"content": " world"}), chunk("gpt-4o", {}, "stop"),
                   chunk("gpt-4o", usage=USAGE, choices=False), DONE])
    reply = await shape(up.answer(), plan(False))
    assert isinstance(reply, JsonReply) and up.closed == 1
    body = json.loads(reply.body)
    assert (body["object"], body["model"], body["id"]) == ("chat.completion", "team/gpt", "chatcmpl-up")
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello world"},
                                "finish_reason": "stop", "logprobs": None}]
    assert reply.usage == USAGE == body["usage"]


async def test_stream_as_json_is_complete_with_a_finish_but_no_done() -> None:
    up = Upstream([chunk("gpt-4o", {"content": "ok"}), chunk("gpt-4o", {}, "length")])
    reply = await shape(up.answer(), plan(False))
    assert isinstance(reply, JsonReply) and json.loads(reply.body)["choices"][0]["finish_reason"] == "length"
    assert reply.usage is None  # none was sent: accounting counts it as missing, never guessed


async def test_stream_as_json_raises_truncated_for_a_stream_cut_before_its_finish() -> None:
    up = Upstream([chunk("gpt-4o", {"content": "part"})])
    with pytest.raises(UpstreamError) as info:
        await shape(up.answer(), plan(False))
    assert (info.value.status, info.value.reason, info.value.provider) == (502, "truncated", "up")
    assert up.closed == 1


@pytest.mark.parametrize(("bad", "reason"), [
    (b"data: {not json", "protocol"),
    (b'data: {"choices": "not a list of choices"}', "protocol"),
    (b'data: {"error": {"message": "overloaded"}}', "truncated"),
])
async def test_stream_as_json_fails_on_a_malformed_or_error_chunk(bad: bytes, reason: str) -> None:
    up = Upstream([chunk("gpt-4o", {"content": "a"}), bad, chunk("gpt-4o", {}, "stop")])
    with pytest.raises(UpstreamError) as info:
        await shape(up.answer(), plan(False))
    assert (info.value.status, info.value.reason) == (502, reason)
    assert up.closed == 1


# ---------------------------------------------------------------- json -> stream (force_non_stream)
@pytest.mark.parametrize("keep_usage", [False, True])
async def test_json_as_stream_synthesizes_a_chat_stream(keep_usage: bool) -> None:
    reply = await shape(JsonAnswer(completion("gpt-4o", "Hello world", usage=USAGE)), plan(True, keep_usage))
    assert isinstance(reply, StreamReply)
    events = await drain(reply)
    assert events[-1] == DONE
    chunks = payloads(events)
    assert {c["model"] for c in chunks} == {"team/gpt"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hello world"
    assert (chunks[-1]["choices"] == []) is keep_usage
    assert reply.usage() == USAGE  # accounting sees it either way


# ---------------------------------------------------------------- stream -> stream (pass-through)
async def test_stream_as_stream_renames_and_hides_usage_the_client_did_not_ask_for() -> None:
    up = Upstream([chunk("gpt-4o", {"content": "hi"}), chunk("gpt-4o", {}, "stop")],
                  [chunk("gpt-4o", usage=USAGE, choices=False), DONE])
    reply = await shape(up.answer(), plan(True, keep_usage=False))
    assert isinstance(reply, StreamReply) and reply.headers == {"x-upstream": "1"}
    events = await drain(reply)
    assert events[-1] == DONE and events.count(DONE) == 1
    chunks = payloads(events)
    assert len(chunks) == 2 and {c["model"] for c in chunks} == {"team/gpt"}
    assert all(c["choices"] for c in chunks)
    assert reply.usage() == USAGE and up.closed == 1


async def test_stream_as_stream_shows_usage_when_asked() -> None:
    up = Upstream([chunk("gpt-4o", {}, "stop"), chunk("gpt-4o", usage=USAGE, choices=False), DONE])
    reply = await shape(up.answer(), plan(True, keep_usage=True))
    assert isinstance(reply, StreamReply)
    chunks = payloads(await drain(reply))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE and chunks[-1]["model"] == "team/gpt"


async def test_stream_as_stream_raises_truncated_after_forwarding_what_came() -> None:
    up = Upstream([chunk("gpt-4o", {"content": "part"})])
    reply = await shape(up.answer(), plan(True))
    assert isinstance(reply, StreamReply)
    got: list[bytes] = []
    with pytest.raises(UpstreamError) as info:
        async for batch in reply.events:
            got += batch
    assert (info.value.status, info.value.reason) == (502, "truncated")
    assert len(got) == 1 and b"part" in got[0] and DONE not in got
    await reply.close()
    assert up.closed == 1


async def test_stream_as_stream_appends_done_after_a_finish_without_one() -> None:
    up = Upstream([chunk("gpt-4o", {"content": "ok"})], [chunk("gpt-4o", {}, "stop")])
    reply = await shape(up.answer(), plan(True))
    assert isinstance(reply, StreamReply)
    events = await drain(reply)
    assert events[-1] == DONE and len(events) == 3


async def test_stream_as_stream_forwards_nothing_after_done() -> None:
    up = Upstream([chunk("gpt-4o", {}, "stop"), DONE, b'data: {"late": true}'], [b'data: {"later": true}'])
    reply = await shape(up.answer(), plan(True))
    assert isinstance(reply, StreamReply)
    events = await drain(reply)
    assert events[-1] == DONE and len(events) == 2 and not any(b"late" in e for e in events)


# ---------------------------------------------------------------- the pieces
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
    out = [w.process(e) for batch in [b async for b in split_events(_chunks(parts), "up")] for e in batch]
    assert out[-1] == DONE
    got = "".join(orjson.loads(data_of(e) or b"")["choices"][0]["delta"]["content"] for e in out[:-1] if e)
    assert got == "".join(pieces)


def rplan(endpoint: str = "responses", client_stream: bool = True, keep_usage: bool = True) -> Plan:
    return Plan(endpoint, "p/m", "p", "m", client_stream, keep_usage)


async def batches(*events: bytes) -> EventBatches:
    for ev in events:
        yield [ev]


async def client_events(answer: StreamAnswer | JsonAnswer, p: Plan) -> list[bytes]:
    reply = await shape(answer, p)
    assert isinstance(reply, StreamReply)
    return [ev async for batch in reply.events for ev in batch]


def responses_event(kind: str, named: bool = True, **fields: Any) -> bytes:
    obj = {"type": kind, **fields}
    return named_event(kind, obj) if named else event(obj)


@pytest.mark.parametrize("named", [True, False], ids=["event-line", "type-only"])
async def test_a_responses_delta_naming_the_end_does_not_complete_the_stream(named: bool) -> None:
    events = [responses_event("response.created", named, response={"model": "m"}),
              responses_event("response.output_text.delta", named, delta='"type":"response.completed" event'),
              responses_event("response.output_text.delta", named, delta="response.completed response.incomplete")]
    with pytest.raises(UpstreamError) as exc:
        await client_events(StreamAnswer(batches(*events)), rplan())
    assert exc.value.reason == "truncated"


@pytest.mark.parametrize("named", [True, False], ids=["event-line", "type-only"])
@pytest.mark.parametrize("last", ["response.completed", "response.incomplete", "response.failed"])
async def test_a_responses_stream_ends_with_its_terminal_event_and_no_done(named: bool, last: str) -> None:
    events = [responses_event("response.created", named, response={"model": "m"}),
              responses_event(last, named, response={"model": "m", "usage": {"input_tokens": 1}})]
    out = await client_events(StreamAnswer(batches(*events)), rplan())
    assert len(out) == 2 and DONE not in out
    assert orjson.loads(data_of(out[-1]) or b"")["type"] == last


async def test_chat_streams_still_get_done_added_after_a_finish() -> None:
    finish = event({"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    out = await client_events(StreamAnswer(batches(finish)), rplan("chat/completions", keep_usage=False))
    assert out[-1] == DONE


LOGPROBS = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}], "refusal": None}
ANNOTATIONS = [{"type": "url_citation", "url_citation": {"url": "https://example.com", "title": "Example",
                                                          "start_index": 0, "end_index": 2}}]


def chat_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    return event({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                  "service_tier": "default", "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                          **extra}]})


async def test_force_stream_keeps_logprobs_annotations_and_service_tier() -> None:
    second = {**LOGPROBS, "content": [{"token": "!", "logprob": -0.2, "bytes": [33], "top_logprobs": []}]}
    events = [chat_chunk({"role": "assistant", "content": ""}),
              chat_chunk({"content": "Hi"}, logprobs=LOGPROBS),
              chat_chunk({"content": "!", "annotations": ANNOTATIONS}, logprobs=second),
              chat_chunk({}, "stop"), DONE]
    reply = await shape(StreamAnswer(batches(*events)), rplan("chat/completions", client_stream=False))
    assert isinstance(reply, JsonReply)
    out = orjson.loads(reply.body)
    assert out["service_tier"] == "default"
    choice = out["choices"][0]
    assert choice["message"]["content"] == "Hi!" and choice["message"]["annotations"] == ANNOTATIONS
    assert [t["token"] for t in choice["logprobs"]["content"]] == ["Hi", "!"]


async def test_force_non_stream_keeps_them_and_a_tool_call_only_role_chunk_has_null_content() -> None:
    completion = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "service_tier": "flex",
                  "choices": [{"index": 0, "finish_reason": "stop", "logprobs": LOGPROBS,
                               "message": {"role": "assistant", "content": "Hi", "annotations": ANNOTATIONS}}]}
    chunks = [orjson.loads(data_of(ev) or b"") for ev in await client_events(JsonAnswer(completion),
                                                                             rplan("chat/completions"))
              if ev != DONE]
    assert {c["service_tier"] for c in chunks} == {"flex"}
    deltas = [c["choices"][0] for c in chunks]
    assert [d["logprobs"] for d in deltas if d.get("logprobs")] == [LOGPROBS]
    assert next(d for d in deltas if d.get("logprobs"))["delta"] == {"content": "Hi"}
    assert [d["delta"]["annotations"] for d in deltas if "annotations" in d["delta"]] == [ANNOTATIONS]

    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    tools = {**completion, "choices": [{"index": 0, "finish_reason": "tool_calls",
                                        "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
    first = orjson.loads(data_of((await client_events(JsonAnswer(tools), rplan("chat/completions")))[0]) or b"")
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": None}
