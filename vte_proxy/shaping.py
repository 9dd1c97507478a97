"""Answer shaping: the one place that decides what the client receives from a provider's answer.

:func:`shape` picks one of four shapers from (does the client stream?, does the upstream
stream?): JSON as is, a stream assembled into JSON (``force_stream``), JSON turned into a
stream (``force_non_stream``), or a stream passed through. All four write the exposed model
name, keep usage for accounting while showing it only when the client asked, and judge
completeness once (:class:`~vte_proxy.stream_watcher.StreamWatcher`): a stream cut before
``[DONE]`` and before any finish is an :class:`~vte_proxy.errors.UpstreamError` ``truncated``, raised, never written
here (the exchange turns it into an SSE error event).

The pass-through path never decodes an event unless it must (see
:mod:`vte_proxy.stream_watcher`); the stream <-> JSON converters are in
:mod:`vte_proxy.chat_convert`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from vte_proxy.chat_convert import ChatAssembler, synthesize
from vte_proxy.errors import UpstreamError
from vte_proxy.providers.base import Answer, EventBatches, JsonAnswer, StreamAnswer
from vte_proxy.sse import DONE
from vte_proxy.stream_watcher import StreamWatcher, set_model, usage_of


@dataclass(frozen=True, slots=True)
class Plan:
    """How to shape one answer: what the client asked for and where the answer came from."""

    endpoint: str
    exposed: str          # the name the client asked for: every answer carries it
    provider: str
    upstream_model: str
    client_stream: bool
    keep_usage: bool      # the client asked for usage in its stream (Responses: always)


@dataclass(slots=True)
class JsonReply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    usage: dict[str, Any] | None = None


@dataclass(slots=True)
class StreamReply:
    """Events for the client, batch by batch; ``usage()`` is final once they are exhausted."""

    events: EventBatches
    close: Callable[[], Awaitable[None]]
    usage: Callable[[], dict[str, Any] | None]
    headers: dict[str, str] = field(default_factory=dict)


Reply = JsonReply | StreamReply


async def shape(answer: Answer, plan: Plan) -> Reply:
    """The reply the client gets for ``answer`` under ``plan``."""
    if isinstance(answer, JsonAnswer):
        return _json_as_stream(answer, plan) if plan.client_stream else _json_as_json(answer, plan)
    if plan.client_stream:
        return _stream_as_stream(answer, plan)
    return await _stream_as_json(answer, plan)


def _json_as_json(answer: JsonAnswer, plan: Plan) -> JsonReply:
    obj = answer.body
    set_model(obj, plan.exposed)
    return JsonReply(200, orjson.dumps(obj), answer.headers, usage_of(obj))


def _json_as_stream(answer: JsonAnswer, plan: Plan) -> StreamReply:
    obj = answer.body
    usage = usage_of(obj)
    events = synthesize(obj, plan.exposed, plan.keep_usage) if plan.endpoint == "chat/completions" else []
    return StreamReply(_once(events), _nothing, lambda: usage, answer.headers)


def _stream_as_stream(answer: StreamAnswer, plan: Plan) -> StreamReply:
    watcher = StreamWatcher(plan.exposed, plan.upstream_model, plan.keep_usage)
    # OpenAI ends a Responses stream with its terminal event, never with [DONE]: raw SSE
    # consumers of /v1/responses must not see one.
    done = plan.endpoint != "responses"
    return StreamReply(_watched(answer.events, watcher, plan.provider, done), answer.close, watcher.get_usage,
                       answer.headers)


async def _stream_as_json(answer: StreamAnswer, plan: Plan) -> JsonReply:
    """force_stream for a non-streaming client: one chat.completion from the upstream chunks."""
    try:
        completion = await _assemble(answer.events, plan)
    finally:
        await answer.close()
    return JsonReply(200, orjson.dumps(completion), answer.headers, completion.get("usage"))


async def _nothing() -> None:
    return None


async def _once(events: list[bytes]) -> EventBatches:
    yield events


def truncated(provider: str) -> UpstreamError:
    return UpstreamError(provider, 502, f"provider {provider!r} ended the stream before it was complete",
                         "truncated")


async def _watched(events: EventBatches, watcher: StreamWatcher, provider: str, done: bool = True) -> EventBatches:
    """Forward events as they arrive, a read's worth at a time, until ``[DONE]``; raise
    ``truncated`` when the upstream ends before the answer was complete; ``done``: end a
    complete stream that lacked it with ``[DONE]``."""
    process = watcher.process
    try:
        async for batch in events:
            if len(batch) == 1:  # the common case (one frame per read), without a comprehension
                processed = process(batch[0])
                out = [processed] if processed is not None else []
            else:
                out = [processed for processed in map(process, batch) if processed is not None]
            if watcher.done:
                out = out[:out.index(DONE) + 1]
            if out:
                yield out
            if watcher.done:
                return
    finally:
        await events.aclose()
    if not watcher.finished:
        raise truncated(provider)
    if done:
        yield [DONE]


async def _assemble(events: EventBatches, plan: Plan) -> dict[str, Any]:
    watcher = StreamWatcher(plan.exposed, plan.upstream_model, keep_usage=True)
    assembler = ChatAssembler(plan.provider)
    async for batch in events:
        for ev in batch:
            watcher.process(ev)
            if watcher.done:
                break
            assembler.add_event(ev)
        if watcher.done:
            break
    if not watcher.complete:
        raise truncated(plan.provider)
    return assembler.result(plan.exposed)
