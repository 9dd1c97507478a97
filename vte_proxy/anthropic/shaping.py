"""Answer shaping for clients of the Anthropic dialect (``/v1/messages``).

Two cases, chosen by whether the answer came from a Messages upstream:

- native (an ``anthropic`` provider, or a count_tokens estimate): the answer is already in
  Anthropic's shape. JSON gets the exposed model name; a stream passes through event by event
  (only ``message_start``, for the model name and usage, and ``message_delta``, for usage, are
  decoded), and one that ends before ``message_stop`` (and without an ``error`` event) is
  ``truncated``. The stream policy's conversions (stream -> JSON, JSON -> stream) go through
  :class:`~vte_proxy.anthropic.stream.MessageAssembler` and
  :func:`~vte_proxy.anthropic.stream.message_to_events`.
- translated (a chat answer from any other provider): it is first shaped as chat by
  :func:`vte_proxy.shaping.shape` (model name, usage, completeness judged there, once), then
  turned into a Messages answer or event stream (:class:`~vte_proxy.anthropic.stream.ChatToMessages`).

Usage is reported to accounting in OpenAI's terms (cache reads and writes in prompt tokens).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from vte_proxy.anthropic.calls import COUNT_TOKENS, is_native_answer
from vte_proxy.anthropic.responses import chat_to_message, usage_to_openai
from vte_proxy.anthropic.stream import ChatToMessages, MessageAssembler, message_to_events, sse
from vte_proxy.errors import UpstreamError
from vte_proxy.providers.base import Answer, EventBatches, JsonAnswer, StreamAnswer
from vte_proxy.shaping import JsonReply, Plan, Reply, StreamReply, shape, truncated
from vte_proxy.sse import DONE, data_of, with_data

NO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


async def shape_messages(answer: Answer, plan: Plan, provider_type: str) -> Reply:
    """The Anthropic-dialect reply for ``answer`` from a provider of ``provider_type``."""
    if plan.endpoint == COUNT_TOKENS and isinstance(answer, JsonAnswer):
        # Counting consumes no tokens: usage 0/0, so it is not counted as an answer without usage.
        return JsonReply(200, orjson.dumps(answer.body), answer.headers, dict(NO_USAGE))
    if not is_native_answer(plan.endpoint, provider_type):
        return as_messages(await shape(answer, replace(plan, endpoint="chat/completions", keep_usage=True)),
                           plan.exposed)
    if isinstance(answer, JsonAnswer):
        return _json_as_stream(answer, plan) if plan.client_stream else _json_as_json(answer, plan)
    if plan.client_stream:
        return _stream_as_stream(answer, plan)
    return await _stream_as_json(answer, plan)


def _openai_usage(message: dict[str, Any]) -> dict[str, Any] | None:
    usage = message.get("usage")
    return usage_to_openai(usage) if isinstance(usage, dict) else None


# --- translated: chat replies -> Messages -------------------------------------------------------

def as_messages(reply: Reply, exposed: str) -> Reply:
    """A chat reply (already shaped) as a Messages reply."""
    if isinstance(reply, JsonReply):
        message = chat_to_message(orjson.loads(reply.body), exposed)
        return JsonReply(reply.status, orjson.dumps(message), reply.headers, reply.usage)
    return StreamReply(_chat_events_as_messages(reply.events, exposed), reply.close, reply.usage, reply.headers)


async def _chat_events_as_messages(events: EventBatches, exposed: str) -> EventBatches:
    """Chat chunk events -> Anthropic events; the closing events go out with ``[DONE]``'s batch
    (one write, not two)."""
    translator = ChatToMessages(exposed)
    try:
        async for batch in events:
            out = [sse(name, data) for ev in batch if ev != DONE for name, data in _feed(translator, ev)]
            if batch[-1] == DONE:
                yield out + [sse(name, data) for name, data in translator.finish()]
                return
            if out:
                yield out
    finally:
        await events.aclose()
    yield [sse(name, data) for name, data in translator.finish()]


def _feed(translator: ChatToMessages, ev: bytes) -> list[tuple[str, dict[str, Any]]]:
    payload = data_of(ev)
    chunk = orjson.loads(payload) if payload else None
    return translator.feed(chunk) if isinstance(chunk, dict) else []


# --- native: Messages answers --------------------------------------------------------------------

def _json_as_json(answer: JsonAnswer, plan: Plan) -> JsonReply:
    message = answer.body
    if "model" in message:
        message["model"] = plan.exposed
    return JsonReply(200, orjson.dumps(message), answer.headers, _openai_usage(message))


def _json_as_stream(answer: JsonAnswer, plan: Plan) -> StreamReply:
    message = {**answer.body, "model": plan.exposed}
    usage = _openai_usage(message)

    async def events() -> EventBatches:
        yield [sse(name, data) for name, data in message_to_events(message)]

    async def nothing() -> None:
        return None

    return StreamReply(events(), nothing, lambda: usage, answer.headers)


async def _assembled(answer: StreamAnswer, plan: Plan) -> MessageAssembler:
    """Every event of ``answer`` fed to an assembler (the upstream is released at the end)."""
    assembler = MessageAssembler()
    try:
        async for batch in answer.events:
            for payload in filter(None, map(data_of, batch)):
                obj = orjson.loads(payload)
                if isinstance(obj, dict):
                    assembler.feed(obj)
    except orjson.JSONDecodeError:
        raise UpstreamError(plan.provider, 502, f"provider {plan.provider!r} sent an invalid stream event",
                            "protocol") from None
    finally:
        await answer.close()
    return assembler


async def _stream_as_json(answer: StreamAnswer, plan: Plan) -> JsonReply:
    assembler = await _assembled(answer, plan)
    if assembler.error is not None:
        body = {"type": "error", "error": assembler.error}
        raise UpstreamError(plan.provider, 502, str(assembler.error.get("message", "stream error")), "truncated",
                            body=orjson.dumps(body))
    if not assembler.stopped or assembler.message is None:
        raise truncated(plan.provider)
    message = {**assembler.message, "model": plan.exposed}
    return JsonReply(200, orjson.dumps(message), answer.headers, _openai_usage(message))


def _stream_as_stream(answer: StreamAnswer, plan: Plan) -> StreamReply:
    watcher = MessagesWatcher(plan.exposed)
    return StreamReply(_watched(answer.events, watcher, plan.provider), answer.close, watcher.openai_usage,
                       answer.headers)


async def _watched(events: EventBatches, watcher: MessagesWatcher, provider: str) -> EventBatches:
    try:
        async for batch in events:
            yield [watcher.process(ev) for ev in batch]
            if watcher.ended:
                return
    finally:
        await events.aclose()
    if not watcher.ended:
        raise truncated(provider)


def event_kind(ev: bytes) -> bytes:
    """An Anthropic event's type, from its ``event:`` line (or, without one, its data)."""
    if ev.startswith(b"event:"):
        end = ev.find(b"\n")
        return ev[6:end if end >= 0 else len(ev)].strip()
    payload = data_of(ev) or b""
    if payload.startswith(b'{"type":"'):
        return payload[9:payload.find(b'"', 9)]
    return b""


class MessagesWatcher:
    """Looks at each native event once: the exposed model name into ``message_start``, usage
    from it and from ``message_delta``, and the end (``message_stop`` or ``error``)."""

    __slots__ = ("_exposed", "ended", "usage")

    def __init__(self, exposed: str) -> None:
        self._exposed = exposed
        self.usage: dict[str, Any] = {}
        self.ended = False

    def openai_usage(self) -> dict[str, Any] | None:
        return usage_to_openai(self.usage) if self.usage else None

    def process(self, ev: bytes) -> bytes:
        kind = event_kind(ev)
        if kind in (b"message_stop", b"error"):
            self.ended = True
        if kind not in (b"message_start", b"message_delta"):
            return ev
        payload = data_of(ev)
        obj = orjson.loads(payload) if payload else None
        if not isinstance(obj, dict):
            return ev
        message = obj.get("message") if kind == b"message_start" else None
        usage = (message if isinstance(message, dict) else obj).get("usage")
        if isinstance(usage, dict):
            self.usage.update({k: v for k, v in usage.items() if v is not None})
        if isinstance(message, dict):
            message["model"] = self._exposed
            return with_data(ev, orjson.dumps(obj))
        return ev
