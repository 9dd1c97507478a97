"""The echo provider in-process: its streams are shaped like OpenAI's, and bounded."""

from __future__ import annotations

from typing import Any

import orjson

from vte_proxy.config import ProviderConfig
from vte_proxy.providers.base import Call, JsonAnswer, StreamAnswer
from vte_proxy.providers.echo import BATCH, MAX_ECHO_CHARS, EchoProvider
from vte_proxy.routing import Target
from vte_proxy.sse import DONE, data_of

ECHO = EchoProvider(ProviderConfig(name="demo", type="echo", prefix="demo", models=("echo",)))
TARGET = Target(exposed="demo/echo", provider="demo", upstream_model="echo")
RESPONSE_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
                   "response.content_part.added", "response.output_text.delta", "response.output_text.done",
                   "response.content_part.done", "response.output_item.done", "response.completed"]


async def stream(endpoint: str, body: dict[str, Any]) -> list[list[bytes]]:
    answer = await ECHO.send(Call(endpoint, body, TARGET, stream=True))
    assert isinstance(answer, StreamAnswer)
    return [batch async for batch in answer.events]


def payloads(batches: list[list[bytes]]) -> list[dict[str, Any]]:
    return [orjson.loads(data_of(ev) or b"") for batch in batches for ev in batch if ev != DONE]


async def test_responses_stream_is_openais_event_sequence() -> None:
    batches = await stream("responses", {"model": "demo/echo", "input": "one two  three", "stream": True})
    events = [ev for batch in batches for ev in batch]
    kinds = [p["type"] for p in payloads(batches)]
    assert [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]] == RESPONSE_EVENTS
    for ev, kind in zip(events, kinds, strict=True):
        assert ev.startswith(b"event: " + kind.encode() + b"\ndata: ")  # the event: line names the same type
    assert [p["sequence_number"] for p in payloads(batches)] == list(range(len(kinds)))
    by_type = {p["type"]: p for p in payloads(batches)}
    deltas = [p["delta"] for p in payloads(batches) if p["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "one two  three" == by_type["response.output_text.done"]["text"]
    assert not deltas[-1].endswith(" ")  # no trailing space
    added = by_type["response.output_item.added"]["item"]
    assert (added["type"], added["status"], added["content"]) == ("message", "in_progress", [])
    assert by_type["response.content_part.done"]["part"]["text"] == "one two  three"
    final = by_type["response.completed"]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "one two  three"
    assert by_type["response.created"]["response"]["status"] == "in_progress"


async def test_chat_stream_has_no_trailing_space_and_ends_with_done() -> None:
    batches = await stream("chat/completions", {"messages": [{"role": "user", "content": "a b"}]})
    chunks = payloads(batches)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "a b"
    assert batches[-1][-1] == DONE


async def test_echo_is_capped_and_streamed_in_lazy_batches() -> None:
    prompt = "a " * (512 * 1024)  # 1 MiB: one event per word would be ~90 MB
    for endpoint, body in (("chat/completions", {"messages": [{"role": "user", "content": prompt}]}),
                           ("responses", {"input": prompt})):
        answer = await ECHO.send(Call(endpoint, body, TARGET, stream=True))
        assert isinstance(answer, StreamAnswer)
        total = 0
        async for batch in answer.events:
            assert len(batch) <= BATCH
            total += sum(len(ev) for ev in batch)
        assert total < 200 * MAX_ECHO_CHARS, total  # bounded by the cap, not by the prompt
    last = payloads(await stream("chat/completions", {"messages": [{"role": "user", "content": prompt}]}))
    assert [c["choices"][0]["finish_reason"] for c in last if c["choices"]][-1] == "length"
    final = payloads(await stream("responses", {"input": prompt}))[-1]
    assert final["type"] == "response.incomplete" and final["response"]["status"] == "incomplete"


async def test_non_stream_answers_are_capped_too() -> None:
    answer = await ECHO.send(Call("chat/completions", {"messages": [{"role": "user", "content": "x" * 100_000}]},
                                  TARGET, stream=False))
    assert isinstance(answer, JsonAnswer)
    choice = answer.body["choices"][0]
    assert len(choice["message"]["content"]) == MAX_ECHO_CHARS and choice["finish_reason"] == "length"
