"""Answer shaping: the one place that decides what the client receives from a provider's answer.

:func:`shape` picks one of four shapers from (does the client stream?, does the upstream
stream?): JSON as is, a stream assembled into JSON (``force_stream``), JSON turned into a
stream (``force_non_stream``), or a stream passed through. All four write the exposed model
name, keep usage for accounting while showing it only when the client asked, and judge
completeness once (:class:`StreamWatcher`): a stream cut before ``[DONE]`` and before any
finish is an :class:`~vte_proxy.errors.UpstreamError` ``truncated``, raised, never written
here (the exchange turns it into an SSE error event).

The pass-through path never decodes an event unless it must: the ``model`` field is rewritten
by replacing bytes, and only events that carry usage (or a model name it does not recognise)
are parsed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from vte_proxy.errors import UpstreamError
from vte_proxy.providers.base import Answer, EventBatches, JsonAnswer, StreamAnswer
from vte_proxy.sse import DONE, data_of, event, with_data


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


def usage_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Usage from a chat/completions chunk or answer, or from a Responses API event/answer."""
    usage = obj.get("usage")
    if isinstance(usage, dict):
        return usage
    response = obj.get("response")
    if isinstance(response, dict) and isinstance(response.get("usage"), dict):
        return response["usage"]  # type: ignore[no-any-return]
    return None


def set_model(obj: dict[str, Any], exposed: str) -> None:
    if "model" in obj:
        obj["model"] = exposed
    response = obj.get("response")
    if isinstance(response, dict) and "model" in response:
        response["model"] = exposed


class StreamWatcher:
    """Looks at each upstream event once: rewrites ``model``, notes usage and the finish,
    and drops the usage-only chunk the gateway asked for when the client did not. It is the
    one judge of whether a stream was complete (:meth:`complete`)."""

    __slots__ = ("_exposed", "_needles", "_rewrite", "done", "finished", "keep_usage", "usage")

    def __init__(self, exposed: str, upstream_model: str, keep_usage: bool) -> None:
        self._exposed = exposed
        self._rewrite = exposed != upstream_model
        self._needles: list[tuple[bytes, bytes]] = []
        if self._rewrite:
            self._learn(upstream_model)
        self.keep_usage = keep_usage
        self.usage: dict[str, Any] | None = None
        self.finished = False
        self.done = False

    def _learn(self, upstream_model: str) -> None:
        old, new = orjson.dumps(upstream_model), orjson.dumps(self._exposed)
        self._needles += [(b'"model":' + old, b'"model":' + new), (b'"model": ' + old, b'"model": ' + new)]

    @property
    def complete(self) -> bool:
        """Whether the stream ended properly: ``[DONE]``, or every answer finished."""
        return self.done or self.finished

    def get_usage(self) -> dict[str, Any] | None:
        return self.usage

    def process(self, ev: bytes) -> bytes | None:
        """The event to send on, or None to drop it."""
        if ev == DONE:
            self.done = True
            return ev
        # Plain `in` tests, not any(<generator>): this runs for every event of every stream. A
        # finish_reason key cannot occur inside a JSON string (its quotes would be escaped).
        if not self.finished and (b'"finish_reason":"' in ev or b'"finish_reason": "' in ev
                                  or (b"response." in ev and _is_terminal(ev))):
            self.finished = True
        decode = b'"usage":{' in ev or b'"usage": {' in ev
        if self._rewrite:
            ev, renamed = self._rename(ev)
            decode = decode or (not renamed and b'"model"' in ev)
        return self._decoded(ev) if decode else ev

    def _rename(self, ev: bytes) -> tuple[bytes, bool]:
        """``ev`` with the known upstream names replaced by bytes, and whether one was there."""
        hit = False
        for old, new in self._needles:
            if old in ev:
                ev = ev.replace(old, new)
                hit = True
        return ev, hit

    def _decoded(self, ev: bytes) -> bytes | None:
        """The slow path, for events with usage or a model name not seen before."""
        obj = _json_object(ev)
        if obj is None:
            return ev
        usage = usage_of(obj)
        if usage is not None:
            self.usage = usage
            if not self.keep_usage and obj.get("choices") == [] and obj.get("object") != "response":
                return None
        if not self._rewrite:
            return ev
        upstream = obj.get("model") or (obj.get("response") or {}).get("model")
        if isinstance(upstream, str) and upstream != self._exposed:
            self._learn(upstream)  # the upstream names the model its own way: match it cheaply next time
        set_model(obj, self._exposed)
        return with_data(ev, orjson.dumps(obj))


# The events that end a Responses stream (the answer complete, cut by a limit, or failed).
TERMINAL_EVENTS = frozenset((b"response.completed", b"response.incomplete", b"response.failed"))


def _is_terminal(ev: bytes) -> bool:
    """Whether ``ev`` is a Responses stream's last event, by its ``event:`` line or, without
    one, its ``type``: never by words that a text delta may contain."""
    if ev.startswith(b"event:"):
        return ev[6:ev.find(b"\n")].strip() in TERMINAL_EVENTS if b"\n" in ev else False
    obj = _json_object(ev)
    kind = obj.get("type") if obj is not None else None
    return isinstance(kind, str) and kind.encode() in TERMINAL_EVENTS


def _json_object(ev: bytes) -> dict[str, Any] | None:
    payload = data_of(ev)
    if payload is None:
        return None
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


class ChatAssembler:
    """Builds one ``chat.completion`` from ``chat.completion.chunk`` events (force_stream)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None

    def add_event(self, ev: bytes) -> None:
        """One upstream event; a malformed one, or an error, fails the answer (502)."""
        payload = data_of(ev)
        if payload is None:
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise self._failure("sent an invalid stream event", "protocol") from None
        if not isinstance(chunk, dict):
            return
        if "error" in chunk and "choices" not in chunk:
            raise self._failure("failed mid-stream", "truncated")
        try:
            self.add(chunk)
        except (AttributeError, TypeError):  # a chunk of the wrong shape
            raise self._failure("sent a malformed chunk", "protocol") from None

    def _failure(self, what: str, reason: str) -> UpstreamError:
        return UpstreamError(self.provider, 502, f"provider {self.provider!r} {what}", reason)

    def add(self, chunk: dict[str, Any]) -> None:
        for k in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if k in chunk and k not in self.head:
                self.head[k] = chunk[k]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for c in chunk.get("choices") or ():
            self._add_choice(c)

    def _add_choice(self, c: dict[str, Any]) -> None:
        choice = self.choices.setdefault(c.get("index", 0), {"content": [], "reasoning": [], "tools": {},
                                                             "finish": None, "role": "assistant", "refusal": [],
                                                             "annotations": [], "logprobs": None})
        delta = c.get("delta") or {}
        if delta.get("role"):
            choice["role"] = delta["role"]
        for name, key in (("content", "content"), ("reasoning_content", "reasoning"), ("refusal", "refusal"),
                          ("annotations", "annotations")):
            if delta.get(name):
                choice[key] += delta[name] if name == "annotations" else [delta[name]]
        for tc in delta.get("tool_calls") or ():
            _add_tool_call(choice["tools"], tc)
        if isinstance(c.get("logprobs"), dict):
            choice["logprobs"] = _merge_logprobs(choice["logprobs"], c["logprobs"])
        if c.get("finish_reason"):
            choice["finish"] = c["finish_reason"]

    def result(self, exposed: str) -> dict[str, Any]:
        choices = [_assembled_choice(i, self.choices[i]) for i in sorted(self.choices)]
        out: dict[str, Any] = {"id": self.head.get("id", "chatcmpl-vte"), "object": "chat.completion",
                               "created": self.head.get("created", 0), "model": exposed, "choices": choices}
        for k in ("system_fingerprint", "service_tier"):
            if k in self.head:
                out[k] = self.head[k]
        if self.usage is not None:
            out["usage"] = self.usage
        return out


def _add_tool_call(tools: dict[int, dict[str, Any]], tc: dict[str, Any]) -> None:
    slot = tools.setdefault(tc.get("index", 0), {"id": None, "type": "function", "name": [], "arguments": []})
    if tc.get("id"):
        slot["id"] = tc["id"]
    if tc.get("type"):
        slot["type"] = tc["type"]
    fn = tc.get("function") or {}
    if fn.get("name"):
        slot["name"].append(fn["name"])
    if fn.get("arguments"):
        slot["arguments"].append(fn["arguments"])


def _merge_logprobs(into: dict[str, Any] | None, more: dict[str, Any]) -> dict[str, Any]:
    """A choice's logprobs so far with one more chunk's (``content`` and ``refusal`` token lists)."""
    out = dict(into or {})
    for k, v in more.items():
        out[k] = [*(out.get(k) or []), *v] if isinstance(v, list) else out.get(k, v)
    return out


def _assembled_choice(i: int, c: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": c["role"], "content": "".join(c["content"]) or None}
    if c["annotations"]:
        message["annotations"] = c["annotations"]
    if c["reasoning"]:
        message["reasoning_content"] = "".join(c["reasoning"])
    if c["refusal"]:
        message["refusal"] = "".join(c["refusal"])
    if c["tools"]:
        message["tool_calls"] = [
            {"id": t["id"], "type": t["type"],
             "function": {"name": "".join(t["name"]), "arguments": "".join(t["arguments"])}}
            for _, t in sorted(c["tools"].items())
        ]
    return {"index": i, "message": message, "finish_reason": c["finish"], "logprobs": c["logprobs"]}


def synthesize(completion: dict[str, Any], exposed: str, include_usage: bool) -> list[bytes]:
    """A valid chat stream (ending in ``[DONE]``) that rebuilds ``completion`` (force_non_stream)."""
    head = {"id": completion.get("id", "chatcmpl-vte"), "object": "chat.completion.chunk",
            "created": completion.get("created", 0), "model": exposed}
    for k in ("system_fingerprint", "service_tier"):
        if completion.get(k):
            head[k] = completion[k]
    out = [event({**head, "choices": [c]}) for choice in completion.get("choices") or ()
           for c in _choice_deltas(choice)]
    if include_usage and isinstance(completion.get("usage"), dict):
        out.append(event({**head, "choices": [], "usage": completion["usage"]}))
    out.append(DONE)
    return out


def _choice_deltas(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream choices that rebuild one completion choice: role, reasoning, content (with
    the choice's logprobs), refusal, annotations, each tool call (name first, then its
    arguments), the finish. The role chunk's content is null for a tool-call-only message, as
    OpenAI streams it."""
    i = choice.get("index", 0)
    msg = choice.get("message") or {}
    tool_only = bool(msg.get("tool_calls")) and not msg.get("content")
    deltas: list[dict[str, Any]] = [{"role": msg.get("role", "assistant"), "content": None if tool_only else ""}]
    deltas += [{name: msg[name]} for name in ("reasoning_content", "content", "refusal", "annotations")
               if msg.get(name)]
    for j, tc in enumerate(msg.get("tool_calls") or ()):
        fn = tc.get("function") or {}
        deltas.append({"tool_calls": [{"index": j, "id": tc.get("id"), "type": tc.get("type", "function"),
                                       "function": {"name": fn.get("name", ""), "arguments": ""}}]})
        if fn.get("arguments"):
            deltas.append({"tool_calls": [{"index": j, "function": {"arguments": fn["arguments"]}}]})
    out = [{"index": i, "delta": d, "finish_reason": None} for d in deltas]
    if choice.get("logprobs"):  # all of them on the content chunk (or the role chunk): the SDKs concatenate
        at = next((n for n, d in enumerate(deltas) if n and "content" in d), 0)
        out[at]["logprobs"] = choice["logprobs"]
    out.append({"index": i, "delta": {}, "finish_reason": choice.get("finish_reason") or "stop"})
    return out
