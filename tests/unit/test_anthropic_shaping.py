"""Shaping for the Anthropic dialect (vte_proxy.anthropic.shaping) and its ingress pieces
(dialect.ANTHROPIC, anthropic.calls), in-process with scripted answers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.anthropic_upstream import message_events, text_message, tool_use_message
from tests.anthropic_wire import parse_sse, replay_stream
from vte_proxy.anthropic import calls
from vte_proxy.anthropic.shaping import event_kind, shape_messages
from vte_proxy.anthropic.stream import sse
from vte_proxy.dialect import ANTHROPIC, OPENAI, dialect_for_path
from vte_proxy.errors import GatewayError, UpstreamError
from vte_proxy.providers.base import Call, EventBatches, JsonAnswer, StreamAnswer
from vte_proxy.routing import Target
from vte_proxy.shaping import JsonReply, Plan, StreamReply
from vte_proxy.sse import DONE, event

SIG = "+vv8/f7/c2lnLWJ5dGVzIQ=="


def plan(client_stream: bool, endpoint: str = "messages") -> Plan:
    return Plan(endpoint, "claude/c", "claude", "claude-test", client_stream, keep_usage=False)


def native_events(answer: dict[str, Any]) -> list[bytes]:
    return [sse(e["type"], e) for e in message_events(answer)]


async def batches(events: list[bytes]) -> EventBatches:
    for ev in events:
        yield [ev]


async def nothing() -> None:
    return None


async def drain(reply: StreamReply) -> list[tuple[str, dict[str, Any]]]:
    out = [ev async for batch in reply.events for ev in batch]
    return parse_sse(b"\n\n".join(out) + b"\n\n")


async def test_native_stream_passes_with_the_exposed_name_and_usage() -> None:
    answer = text_message("hi", usage={"cache_read_input_tokens": 10})
    reply = await shape_messages(StreamAnswer(batches(native_events(answer)), nothing), plan(True), "anthropic")
    assert isinstance(reply, StreamReply)
    events = await drain(reply)
    assert events[0][1]["message"]["model"] == "claude/c" and replay_stream(events).content[0].text == "hi"  # type: ignore[union-attr]
    assert reply.usage() == {"prompt_tokens": 22, "completion_tokens": 4, "total_tokens": 26,
                             "prompt_tokens_details": {"cached_tokens": 10}}


async def test_native_stream_cut_before_message_stop_is_truncated() -> None:
    events = native_events(text_message("hello"))[:-2]
    reply = await shape_messages(StreamAnswer(batches(events), nothing), plan(True), "anthropic")
    assert isinstance(reply, StreamReply)
    with pytest.raises(UpstreamError) as info:
        await drain(reply)
    assert info.value.reason == "truncated"


async def test_native_error_event_ends_the_stream() -> None:
    events = [*native_events(text_message("hello"))[:3],
              sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})]
    reply = await shape_messages(StreamAnswer(batches(events), nothing), plan(True), "anthropic")
    assert isinstance(reply, StreamReply)
    assert (await drain(reply))[-1][0] == "error"


async def test_native_json_both_ways_and_count_tokens() -> None:
    answer = tool_use_message("f", {"a": 1}, thinking=("t", SIG))
    reply = await shape_messages(JsonAnswer(dict(answer)), plan(False), "anthropic")
    assert isinstance(reply, JsonReply) and orjson.loads(reply.body)["model"] == "claude/c"
    streamed = await shape_messages(JsonAnswer(dict(answer)), plan(True), "anthropic")
    assert isinstance(streamed, StreamReply)
    assert replay_stream(await drain(streamed)).model_dump(exclude_none=True)["content"] == answer["content"]
    assembled = await shape_messages(StreamAnswer(batches(native_events(answer)), nothing), plan(False), "anthropic")
    assert isinstance(assembled, JsonReply) and orjson.loads(assembled.body)["content"] == answer["content"]
    count = await shape_messages(JsonAnswer({"input_tokens": 9}), plan(False, calls.COUNT_TOKENS), "openai")
    assert isinstance(count, JsonReply) and orjson.loads(count.body) == {"input_tokens": 9}
    assert count.usage == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}  # not "usage missing"


async def test_translated_chat_stream_becomes_anthropic_events() -> None:
    chunks = [{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
               "choices": [{"index": 0, "delta": d, "finish_reason": f}]}
              for d, f in (({"role": "assistant", "content": ""}, None), ({"content": "Hi"}, None), ({}, "stop"))]
    usage = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt", "choices": [],
             "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
    events = [event(c) for c in [*chunks, usage]] + [DONE]
    reply = await shape_messages(StreamAnswer(batches(events), nothing), plan(True), "openai")
    assert isinstance(reply, StreamReply)
    out = await drain(reply)
    assert [n for n, _ in out][-2:] == ["message_delta", "message_stop"]
    assert out[-2][1]["usage"]["output_tokens"] == 1 and replay_stream(out).model == "claude/c"
    assert reply.usage() == usage["usage"]


def test_event_kind_with_and_without_an_event_line() -> None:
    assert event_kind(b'event: message_stop\ndata: {"type":"message_stop"}') == b"message_stop"
    assert event_kind(b'data: {"type":"ping"}') == b"ping"
    assert event_kind(b": comment") == b""


def test_dialect_errors_and_paths() -> None:
    assert dialect_for_path("/v1/messages") is ANTHROPIC and dialect_for_path("/v1/messages/count_tokens") is ANTHROPIC
    assert dialect_for_path("/v1/chat/completions") is OPENAI
    assert orjson.loads(ANTHROPIC.error_body(GatewayError(413, "too big"))) == {
        "type": "error", "error": {"type": "request_too_large", "message": "too big"}}
    upstream = UpstreamError("p", 429, "x", "status", body=b'{"error": {"message": "slow down", "type": "t"}}')
    assert orjson.loads(ANTHROPIC.error_body(upstream))["error"] == {"type": "rate_limit_error",
                                                                     "message": "slow down"}
    assert ANTHROPIC.error_event(GatewayError(502, "cut")).startswith(b"event: error\ndata: {")
    with pytest.raises(GatewayError):
        ANTHROPIC.parse(b'{"model": "m"}')


async def test_calls_native_translated_and_estimated() -> None:
    target = Target("x/m", "x", "m")
    body = {"model": "x/m", "max_tokens": 5, "messages": [{"role": "user", "content": "hello world"}]}
    call = Call("messages", body, target, False, {"anthropic-beta": "b", "x-request-id": "r"}, "anthropic")
    assert await calls.prepare(call, "anthropic") is call
    chat = await calls.prepare(call, "openai")
    assert isinstance(chat, Call) and chat.endpoint == "chat/completions" and chat.dialect == "openai"
    assert chat.headers == {"x-request-id": "r"}
    assert chat.body["messages"] == [{"role": "user", "content": "hello world"}]
    estimate = await calls.prepare(Call(calls.COUNT_TOKENS, body, target, False, dialect="anthropic"), "echo")
    assert isinstance(estimate, JsonAnswer) and 0 < estimate.body["input_tokens"] < 20
