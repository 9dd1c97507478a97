"""The request pipeline below the exchange: route and authorise, apply the stream policy, call
the provider (retries, fall-over before the first byte), and hand the answer to shaping.

It knows nothing of transports, metrics or accounting: progress is reported through the
:class:`Tracker` the exchange passes in, and every failure is raised. When tracing is on the
tracker carries the request's span: each upstream attempt gets a child span, whose
``traceparent`` is what that attempt sends upstream.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from vte_proxy.auth import ClientKey
from vte_proxy.errors import GatewayError, UpstreamError
from vte_proxy.limits import LimitExceeded, Ticket, estimate
from vte_proxy.providers.base import TRACE_HEADERS, Answer, Call, Provider
from vte_proxy.record import RequestRecord
from vte_proxy.routing import Entry, Target
from vte_proxy.shaping import Plan, Reply, shape
from vte_proxy.state import GatewayState

if TYPE_CHECKING:  # the SDK side of tracing is imported only when tracing is on
    from vte_proxy.tracing_sdk import AttemptSpan, RequestSpan

log = logging.getLogger("vte_proxy.pipeline")

# Client headers passed to OpenAI-type upstreams; everything else (Authorization, cookies,
# hop-by-hop, Host) is never forwarded. The W3C trace context passes through as is while
# tracing is off; when it is on, each attempt sends its own span's instead.
# A frozenset: the transport tests every client header against it (cheaper than a 4-tuple).
FORWARDED_HEADERS = frozenset((b"openai-beta", b"x-request-id", b"traceparent", b"tracestate"))
RETRY_STATUSES = (502, 503, 504)


class Tracker(Protocol):
    """What the pipeline tells the exchange as the request goes down."""

    record: RequestRecord
    span: RequestSpan | None  # the request's server span; None when tracing is off

    def dispatched(self, provider: str) -> None:
        """The request is being sent to ``provider`` (first try, retry or fall-over)."""

    def admitted(self, ticket: Ticket) -> None:
        """The limits admitted the request: the exchange settles ``ticket`` when it ends."""


@dataclass(slots=True)
class Request:
    """One parsed client request, as the pipeline sees it."""

    endpoint: str
    body: dict[str, Any]
    key: ClientKey
    client_stream: bool
    headers: dict[str, str] = field(default_factory=dict)  # allow-listed client headers
    dialect: str = "openai"
    size: int = 0  # the body's bytes (the token reservation's prompt guess)


async def dispatch(state: GatewayState, request: Request, tracker: Tracker) -> Reply:
    """Answer one parsed request; raises GatewayError for anything before the first byte."""
    entry = resolve(state, request, tracker.record)
    span = tracker.span
    if span is not None:
        span.model(request.body, entry.name, entry.name if entry.route else None)
    ticket = await admit(state, entry, request, tracker)
    answer, target = await call_targets(state, entry, request, tracker, ticket)
    if span is not None:
        answer = span.observe(answer)  # the upstream's own model name, id and finish, before shaping
    plan = Plan(request.endpoint, entry.name, target.provider, target.upstream_model, request.client_stream,
                keep_usage=request.endpoint == "responses" or wants_usage(request.body))
    reply = await shape(answer, plan)
    reply.headers.update(ticket.headers())
    return reply


async def admit(state: GatewayState, entry: Entry, request: Request, tracker: Tracker) -> Ticket:
    """The limits, before any provider is called: 429 when the key, the gateway, or every
    target's model rule or provider is full (one store round trip in the common case)."""
    targets = [(t.exposed, t.provider) for t in entry.targets]
    ticket = await state.limiter.admit(request.key.name, targets, estimate(request.body, request.size))
    tracker.admitted(ticket)
    return ticket


def resolve(state: GatewayState, request: Request, rec: RequestRecord) -> Entry:
    """The routing entry of the requested model, if this key may use it."""
    model: str = request.body["model"]
    rec.requested = model
    entry = state.routing.resolve(model)
    if entry is None:
        raise GatewayError(404, f"model {model!r} does not exist or is not served here", "model_not_found")
    rec.model = model
    if not request.key.allows(model):
        raise GatewayError(403, f"this key may not use model {model!r}", "model_not_allowed")
    if not entry.targets:
        raise GatewayError(503, f"route {model!r} has no available target", "no_target")
    return entry


def wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def upstream_streams(state: GatewayState, request: Request, target: Target) -> bool:
    """Whether to call the upstream streaming: the stream policy (chat only) or the client."""
    if request.endpoint == "embeddings":
        return False
    if request.endpoint == "chat/completions":
        mode = state.stream_modes[target.provider]
        if mode != "auto":
            return mode == "force_stream"
    return request.client_stream


async def call_targets(state: GatewayState, entry: Entry, request: Request,
                       tracker: Tracker, ticket: Ticket) -> tuple[Answer, Target]:
    """Try the entry's targets in order, each with its provider's retries.

    Another try happens only for failures before the first byte: retries on connect errors,
    timeouts, 502/503/504; the next target also on 429 and any 5xx. A target whose model rule
    or provider limit is full is skipped; the client gets the last upstream error, or the 429
    when no target had room.
    """
    failed: UpstreamError | None = None
    full: LimitExceeded | None = None
    # Targets before the admitted one had no room when the request was admitted.
    first = next((i for i, t in enumerate(entry.targets) if ticket.holds(t.exposed, t.provider)), 0)
    for target in entry.targets[first:]:
        try:
            await ticket.attempt(target.exposed, target.provider)
        except LimitExceeded as exc:
            full = exc
            continue
        tracker.dispatched(target.provider)
        try:
            return await _attempts(state, target, request, tracker.span), target
        except UpstreamError as exc:
            if not exc.retryable:
                raise
            failed = exc
    if failed is not None:
        raise failed
    assert full is not None
    raise state.limiter.counted(request.key.name, full)


async def _attempts(state: GatewayState, target: Target, request: Request, span: RequestSpan | None) -> Answer:
    """One target, with its provider's retries (jittered exponential backoff)."""
    provider = state.providers.providers[target.provider]
    call = Call(request.endpoint, request.body, target, upstream_streams(state, request, target), request.headers,
                request.dialect)
    retries = provider.config.retries
    for attempt in range(retries + 1):
        traced = None if span is None else _traced(span, provider, call, request)
        try:
            answer = await provider.send(call)
        except UpstreamError as exc:
            if traced is not None:
                traced.failed(exc.status, exc.reason)
            if not _may_retry(exc, target) or attempt == retries:
                raise
            await asyncio.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + random.random()))
        else:
            if traced is not None:
                traced.answered()
            return answer
    raise AssertionError("unreachable")


def _may_retry(exc: UpstreamError, target: Target) -> bool:
    """Whether the same target may be tried again after ``exc`` (logged here, once per failure)."""
    log.warning("provider %s failed (%s, HTTP %d) for %s", target.provider, exc.reason, exc.status, target.exposed)
    return exc.retryable and (exc.reason != "status" or exc.status in RETRY_STATUSES)


def _traced(span: RequestSpan, provider: Provider, call: Call, request: Request) -> AttemptSpan:
    """The span of one attempt; the call carries its trace context upstream."""
    attempt = span.attempt(provider.name, provider.config.type, call.target.upstream_model,
                           target=call.target.exposed, stream=call.stream, base_url=provider.config.base_url)
    # The client's trace context is replaced as a whole (a tracestate never outlives its traceparent).
    call.headers = {**{k: v for k, v in request.headers.items() if k not in TRACE_HEADERS}, **attempt.headers}
    return attempt
