"""The request pipeline, shared by HTTP and WebSocket: route, authorise, apply the stream
policy, call the provider (retries, fall-over), and shape the answer for the client.

:func:`dispatch` returns a :class:`JsonReply` or a :class:`StreamReply` (SSE events); the
transports (:mod:`vte_proxy.http`, :mod:`vte_proxy.websocket`) only frame and send them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from vte_proxy import metrics
from vte_proxy.accounting import RequestRecord, dispatched, record_usage
from vte_proxy.auth import ClientKey
from vte_proxy.errors import GatewayError, UpstreamError, bad_request
from vte_proxy.providers.base import Call, JsonAnswer, StreamAnswer
from vte_proxy.routing import Entry, Target
from vte_proxy.sse import DONE, ChatAssembler, StreamWatcher, data_of, error_event, set_model, synthesize
from vte_proxy.state import GatewayState

log = logging.getLogger("vte_proxy.proxy")

# Client headers passed to OpenAI-type upstreams; everything else (Authorization, cookies,
# hop-by-hop, Host) is never forwarded.
FORWARDED_HEADERS = (b"openai-beta", b"x-request-id")
RETRY_STATUSES = (502, 503, 504)
MAX_MODEL_NAME = 256


@dataclass(slots=True)
class JsonReply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class StreamReply:
    events: AsyncIterator[list[bytes]]  # batches of SSE events, each sent in one write
    close: Callable[[], Awaitable[None]]


Reply = JsonReply | StreamReply


def parse_request(raw: bytes) -> dict[str, Any]:
    """The client's JSON body as a dict with a string ``model``; 400 otherwise."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("the request body is not valid JSON (UTF-8)", "invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string", "invalid_model")
    if len(model) > MAX_MODEL_NAME:
        raise bad_request("'model' is too long", "invalid_model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "invalid_stream")
    return body


def resolve(state: GatewayState, key: ClientKey, body: dict[str, Any], rec: RequestRecord) -> Entry:
    model: str = body["model"]
    rec.requested = model
    entry = state.routing.resolve(model)
    if entry is None:
        raise GatewayError(404, f"model {model!r} does not exist or is not served here", "model_not_found")
    rec.model = model
    if not key.allows(model):
        raise GatewayError(403, f"this key may not use model {model!r}", "model_not_allowed")
    if not entry.targets:
        raise GatewayError(503, f"route {model!r} has no available target", "no_target")
    return entry


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def upstream_streams(state: GatewayState, endpoint: str, target: Target, client_stream: bool) -> bool:
    """Whether to call the upstream streaming: the stream policy (chat only) or the client."""
    if endpoint == "embeddings":
        return False
    if endpoint == "chat/completions":
        mode = state.stream_modes[target.provider]
        if mode == "force_stream":
            return True
        if mode == "force_non_stream":
            return False
    return client_stream


async def call_targets(state: GatewayState, entry: Entry, endpoint: str, body: dict[str, Any],
                       client_stream: bool, headers: dict[str, str], rec: RequestRecord
                       ) -> tuple[JsonAnswer | StreamAnswer, Target]:
    """Try the entry's targets in order, each with its provider's retries.

    Another try happens only for failures before the first byte: retries on connect errors,
    timeouts, 502/503/504; the next target also on 429 and any 5xx.
    """
    providers = state.providers.providers
    last: UpstreamError | None = None
    for target in entry.targets:
        provider = providers[target.provider]
        dispatched(rec, target.provider)  # sets rec.provider; in-flight gauge (observability)
        call = Call(endpoint, body, target, upstream_streams(state, endpoint, target, client_stream), headers,
                    entry.name)
        for attempt in range(1 + provider.config.retries):
            try:
                return await provider.send(call), target
            except UpstreamError as exc:
                metrics.child(metrics.UPSTREAM_ERRORS, target.provider, exc.reason).inc()
                log.warning("provider %s failed (%s, HTTP %d) for %s", target.provider, exc.reason, exc.status,
                            target.exposed)
                last = exc
                again = exc.reason != "status" or exc.status in RETRY_STATUSES
                if not (exc.retryable and again) or attempt == provider.config.retries:
                    break
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + random.random()))
        assert last is not None
        if not last.retryable:
            raise last
    assert last is not None
    raise last


async def dispatch(state: GatewayState, endpoint: str, key: ClientKey, body: dict[str, Any],
                   rec: RequestRecord, headers: dict[str, str], force_stream_reply: bool = False) -> Reply:
    """Answer one parsed request; raises GatewayError for anything before the first byte."""
    entry = resolve(state, key, body, rec)
    client_stream = force_stream_reply or (body.get("stream") is True and endpoint != "embeddings")
    rec.stream = client_stream
    answer, target = await call_targets(state, entry, endpoint, body, client_stream, headers, rec)
    exposed = entry.name
    if not client_stream:
        if isinstance(answer, StreamAnswer):
            obj = await _assemble(answer, exposed, target, rec)
        else:
            obj = answer.body
            set_model(obj, exposed)
            record_usage(rec, obj.get("usage") if isinstance(obj.get("usage"), dict) else None)
        return JsonReply(200, orjson.dumps(obj), answer.headers)
    if isinstance(answer, JsonAnswer):
        obj = answer.body
        record_usage(rec, obj.get("usage") if isinstance(obj.get("usage"), dict) else None)
        events = synthesize(obj, exposed, _wants_usage(body)) if endpoint == "chat/completions" else []
        return StreamReply(_iterate(events, rec), _noop)
    watcher = StreamWatcher(exposed, target.upstream_model, keep_usage=_wants_usage(body) or endpoint == "responses",
                            rewrite=answer.rewrite_model)
    return StreamReply(_pass_through(answer, watcher, rec), answer.close)


async def _noop() -> None:
    return None


async def _iterate(events: list[bytes], rec: RequestRecord) -> AsyncIterator[list[bytes]]:
    rec.ttft = time.monotonic() - rec.started
    yield events


async def _pass_through(answer: StreamAnswer, watcher: StreamWatcher,
                        rec: RequestRecord) -> AsyncIterator[list[bytes]]:
    """Forward events as they arrive, a read's worth at a time; end a cut stream with an
    error event."""
    process = watcher.process
    try:
        async for batch in answer.events:
            out = []
            for ev in batch:
                processed = process(ev)
                if processed is not None:
                    out.append(processed)
                    if watcher.done:
                        break
            if out:
                if rec.ttft is None:
                    rec.ttft = time.monotonic() - rec.started
                yield out
            if watcher.done:
                break
    except UpstreamError as exc:
        metrics.child(metrics.UPSTREAM_ERRORS, rec.provider, exc.reason).inc()
        rec.status, rec.error = exc.status, exc.reason
        yield [error_event(exc)]
        return
    finally:
        record_usage(rec, watcher.usage)
    if not watcher.done:
        if not watcher.finished:
            cut = UpstreamError(502, f"provider {rec.provider!r} ended the stream before it was complete",
                                "truncated")
            metrics.child(metrics.UPSTREAM_ERRORS, rec.provider, "truncated").inc()
            rec.status, rec.error = 502, "truncated"
            yield [error_event(cut)]
            return
        yield [DONE]


async def _assemble(answer: StreamAnswer, exposed: str, target: Target, rec: RequestRecord) -> dict[str, Any]:
    """force_stream for a non-streaming client: one chat.completion from the upstream chunks."""
    try:
        completion = await _collect(answer, exposed, target)
    except UpstreamError as exc:
        metrics.child(metrics.UPSTREAM_ERRORS, target.provider, exc.reason).inc()
        raise
    finally:
        await answer.close()
    record_usage(rec, completion.get("usage"))
    return completion


async def _flat(batches: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
    async for batch in batches:
        for ev in batch:
            yield ev


async def _collect(answer: StreamAnswer, exposed: str, target: Target) -> dict[str, Any]:
    assembler = ChatAssembler()
    done = finished = False
    async for ev in _flat(answer.events):
        payload = data_of(ev)
        if payload is None:
            continue
        if payload == b"[DONE]":
            done = True
            break
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamError(502, f"provider {target.provider!r} sent an invalid stream event",
                                "protocol") from None
        if isinstance(chunk, dict):
            if "error" in chunk and "choices" not in chunk:
                raise UpstreamError(502, f"provider {target.provider!r} failed mid-stream", "truncated")
            try:
                assembler.add(chunk)
                finished = finished or any(c.get("finish_reason") for c in chunk.get("choices") or ())
            except (AttributeError, TypeError):  # a chunk of the wrong shape
                raise UpstreamError(502, f"provider {target.provider!r} sent a malformed chunk",
                                    "protocol") from None
    if not (done or finished):
        raise UpstreamError(502, f"provider {target.provider!r} ended the stream before it was complete",
                            "truncated")
    return assembler.result(exposed)
