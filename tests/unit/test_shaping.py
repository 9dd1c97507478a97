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
