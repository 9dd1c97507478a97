"""Answer shaping in-process: completeness of streams, what conversions keep."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from vte_proxy.errors import UpstreamError
from vte_proxy.providers.base import EventBatches, JsonAnswer, StreamAnswer
from vte_proxy.shaping import JsonReply, Plan, StreamReply, shape
from vte_proxy.sse import DONE, data_of, event, named_event


def plan(endpoint: str = "responses", client_stream: bool = True, keep_usage: bool = True) -> Plan:
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
        await client_events(StreamAnswer(batches(*events)), plan())
    assert exc.value.reason == "truncated"


@pytest.mark.parametrize("named", [True, False], ids=["event-line", "type-only"])
@pytest.mark.parametrize("last", ["response.completed", "response.incomplete", "response.failed"])
async def test_a_responses_stream_ends_with_its_terminal_event_and_no_done(named: bool, last: str) -> None:
    events = [responses_event("response.created", named, response={"model": "m"}),
              responses_event(last, named, response={"model": "m", "usage": {"input_tokens": 1}})]
    out = await client_events(StreamAnswer(batches(*events)), plan())
    assert len(out) == 2 and DONE not in out
    assert orjson.loads(data_of(out[-1]) or b"")["type"] == last


async def test_chat_streams_still_get_done_added_after_a_finish() -> None:
    finish = event({"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    out = await client_events(StreamAnswer(batches(finish)), plan("chat/completions", keep_usage=False))
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
    reply = await shape(StreamAnswer(batches(*events)), plan("chat/completions", client_stream=False))
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
                                                                             plan("chat/completions"))
              if ev != DONE]
    assert {c["service_tier"] for c in chunks} == {"flex"}
    deltas = [c["choices"][0] for c in chunks]
    assert [d["logprobs"] for d in deltas if d.get("logprobs")] == [LOGPROBS]
    assert next(d for d in deltas if d.get("logprobs"))["delta"] == {"content": "Hi"}
    assert [d["delta"]["annotations"] for d in deltas if "annotations" in d["delta"]] == [ANNOTATIONS]

    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    tools = {**completion, "choices": [{"index": 0, "finish_reason": "tool_calls",
                                        "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
    first = orjson.loads(data_of((await client_events(JsonAnswer(tools), plan("chat/completions")))[0]) or b"")
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": None}
