"""The request pipeline below the exchange: route and authorise, apply the stream policy, call
the provider (retries, fall-over before the first byte), and hand the answer to shaping.

It knows nothing of transports, metrics or accounting: progress is reported through the
:class:`Tracker` the exchange passes in, and every failure is raised. When tracing is on the
request carries its server span (``Request.span``): each upstream attempt gets a child span,
whose ``traceparent`` is what that attempt sends upstream.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from vte_proxy import system_prompt
from vte_proxy.anthropic import calls as anthropic_calls
from vte_proxy.anthropic.shaping import shape_messages
from vte_proxy.auth import ClientKey
from vte_proxy.balancing import CircuitBreaker, Slot
from vte_proxy.errors import GatewayError, UpstreamError
from vte_proxy.limits import LimitExceeded, Ticket, estimate
from vte_proxy.providers.base import TRACE_HEADERS, Answer, Call, JsonAnswer, Provider, StreamAnswer
from vte_proxy.record import RequestRecord
from vte_proxy.routing import Entry, Target
from vte_proxy.shaping import Plan, Reply, shape
from vte_proxy.state import GatewayState
from vte_proxy.tracing import KEY_TRIES

if TYPE_CHECKING:  # the SDK side of tracing is imported only when tracing is on
    from vte_proxy.tracing_spans import AttemptSpan, RequestSpan

log = logging.getLogger("vte_proxy.pipeline")

# Client headers passed to upstreams (anthropic-*: to Anthropic upstreams only); everything else
# (Authorization, cookies, hop-by-hop, Host) is never forwarded. The W3C trace context passes
# through as is while tracing is off; when it is on, each attempt sends its own span's instead.
# A frozenset: the transport tests every client header against it.
FORWARDED_HEADERS = frozenset((b"openai-beta", b"x-request-id", b"anthropic-version", b"anthropic-beta",
                               b"traceparent", b"tracestate"))
# Endpoints whose upstream call follows the stream policy (stream_mode).
POLICY_ENDPOINTS = ("chat/completions", "messages")
RETRY_STATUSES = (502, 503, 504, 529)  # 529: Anthropic's "overloaded"


@dataclass(frozen=True, slots=True)
class Ingress:
    """What an ingress dialect other than OpenAI's (canonical) adds to the walk: the call each
    provider type gets (or an answer without one), and the shaping back into the dialect."""

    prepare: Callable[[Call, str], Awaitable[Call | JsonAnswer]]      # (call, provider type)
    shape: Callable[[Answer, Plan, str], Awaitable[Reply]]            # (answer, plan, provider type)


# Ingress dialects by name (Request.dialect); OpenAI's is the canonical form and needs none.
INGRESS = {"anthropic": Ingress(anthropic_calls.prepare, shape_messages)}


class Tracker(Protocol):
    """What the pipeline tells the exchange as the request goes down."""

    record: RequestRecord

    def dispatched(self, provider: str) -> None:
        """The request is being sent to ``provider`` (first try, retry or fall-over)."""

    def admitted(self, ticket: Ticket) -> None:
        """The limits admitted the request: the exchange settles ``ticket`` when it ends."""

    def routed(self, route: str, target: str) -> None:
        """A route chose ``target`` (its strategy's first choice, or a fall-over)."""


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
    sent: dict[str, Any] | None = None  # the body of the last try (system prompt applied), for estimates
    span: RequestSpan | None = None  # the request's server span; None when tracing is off


async def dispatch(state: GatewayState, request: Request, tracker: Tracker) -> Reply:
    """Answer one parsed request; raises GatewayError for anything before the first byte."""
    entry = resolve(state, request, tracker.record)
    span = request.span
    if span is not None:
        span.model(request.body, entry.name, entry.name if entry.route else None)
    ticket = await admit(state, entry, request, tracker)
    answer, target = await call_targets(state, entry, request, tracker, ticket)
    if span is not None:
        answer = span.observe(answer)  # the upstream's own model name, id and finish, before shaping
    plan = Plan(request.endpoint, entry.name, target.provider, target.upstream_model, request.client_stream,
                keep_usage=request.endpoint == "responses" or wants_usage(request.body))
    ingress = INGRESS.get(request.dialect)
    if ingress is None:
        reply = await shape(answer, plan)
    else:
        reply = await ingress.shape(answer, plan, state.providers.providers[target.provider].config.type)
    own = ticket.headers()
    if own:  # the gateway's own limits apply: its x-ratelimit-* replace the upstream's, never mix with them
        reply.headers = {k: v for k, v in reply.headers.items() if not k.startswith("x-ratelimit-")} | own
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
    if entry.route:
        entry = allowed_targets(entry, request.key)
    if not entry.targets:
        raise GatewayError(503, f"route {model!r} has no available target", "no_target")
    return entry


def allowed_targets(route: Entry, key: ClientKey) -> Entry:
    """``route`` with only the targets ``key`` may use itself: a route's name never lets a key
    reach a model outside its allow-list (403 when none is left)."""
    targets = tuple(t for t in route.targets if key.allows(t.exposed))
    if len(targets) == len(route.targets):
        return route
    if not targets:
        raise GatewayError(403, f"this key may not use any target of route {route.name!r}", "model_not_allowed")
    return replace(route, targets=targets)


def wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def upstream_streams(state: GatewayState, request: Request, target: Target) -> bool:
    """Whether to call the upstream streaming: the stream policy (chat only) or the client."""
    if request.endpoint in ("embeddings", anthropic_calls.COUNT_TOKENS):
        return False
    if request.endpoint in POLICY_ENDPOINTS:
        mode = state.stream_modes[target.provider]
        if mode != "auto":
            return mode == "force_stream"
    return request.client_stream


async def call_targets(state: GatewayState, entry: Entry, request: Request,
                       tracker: Tracker, ticket: Ticket) -> tuple[Answer, Target]:
    """A model's one target, or a route's targets in its strategy's order, each with its
    provider's retries.

    Another try happens only for failures before the first byte: retries on connect errors,
    timeouts, 502/503/504; the next target also on 429 and any 5xx. A route skips targets whose
    circuit is open or whose model rule or provider limit is full; the client gets the last
    upstream error, else the 429 when no target had room, else the 503 of the open circuits.
    """
    if not entry.route:
        target = entry.targets[0]
        await _reserve(state, request, ticket, target)
        tracker.dispatched(target.provider)
        return await _attempts(state, target, request), target
    return await _route(state, entry, request, tracker, ticket)


async def _reserve(state: GatewayState, request: Request, ticket: Ticket, target: Target) -> None:
    """The target's model and provider limits (a no-op for the admitted target); the refusal
    the client gets is counted."""
    try:
        await ticket.attempt(target.exposed, target.provider)
    except LimitExceeded as exc:
        raise state.limiter.counted(request.key.name, exc) from None


async def _route(state: GatewayState, entry: Entry, request: Request, tracker: Tracker,
                 ticket: Ticket) -> tuple[Answer, Target]:
    balancer = state.balancer
    names = [t.exposed for t in entry.targets]
    failed: UpstreamError | None = None
    full: LimitExceeded | None = None
    skipped: list[CircuitBreaker] = []
    for i in balancer.order(entry.name, entry.strategy, names, entry.weights, entry.breaker):
        target = entry.targets[i]
        slot = balancer.slot(entry.name, target.exposed, entry.breaker)
        if not slot.breaker.allow():
            skipped.append(slot.breaker)
            continue
        try:
            await ticket.attempt(target.exposed, target.provider)
        except LimitExceeded as exc:
            full = exc
            continue
        tracker.dispatched(target.provider)
        tracker.routed(entry.name, target.exposed)
        try:
            return await _tracked(state, target, request, slot), target
        except UpstreamError as exc:
            if not exc.retryable:
                raise
            failed = exc
    if failed is not None:
        raise failed
    if full is not None:
        raise state.limiter.counted(request.key.name, full)
    raise _all_open(entry, skipped)


def _all_open(entry: Entry, breakers: list[CircuitBreaker]) -> GatewayError:
    """Every target's circuit is open: 503 at once, Retry-After when the first lets a probe in."""
    wait = min(b.retry_after() for b in breakers)
    return GatewayError(503, f"every target of route {entry.name!r} is unavailable (circuit open)", "circuit_open",
                        headers={"retry-after": str(max(math.ceil(wait), 1))})


def target_failed(exc: UpstreamError) -> bool:
    """Whether an error says the target is unwell (what a circuit counts): unreachable, too
    slow, garbled, or a 5xx. A 429 or a client error says nothing about its health."""
    return exc.reason in ("connect", "timeout", "protocol") or (exc.reason == "status" and exc.status >= 500)


async def _tracked(state: GatewayState, target: Target, request: Request, slot: Slot) -> Answer:
    """One route target, with its in-flight count, time to first byte and circuit kept."""
    clock, stats, breaker = state.balancer.clock, slot.stats, slot.breaker
    stats.in_flight += 1
    started = clock()
    try:
        answer = await _attempts(state, target, request)
    except UpstreamError as exc:
        stats.in_flight -= 1
        _judge(breaker, exc)
        raise
    except BaseException:
        stats.in_flight -= 1
        raise
    now = clock()
    stats.observe(now - started, now)
    breaker.success()
    return _released(answer, slot)


def _judge(breaker: CircuitBreaker, exc: UpstreamError) -> None:
    """What a failed try tells the target's circuit: a failure, a sign of health (a client
    error: the target answered), or nothing (a 429 or an exhausted key pool)."""
    if target_failed(exc):
        breaker.failure()
    elif exc.status < 500 and exc.status != 429 and exc.reason != "keys":
        breaker.success()


def _released(answer: Answer, slot: Slot) -> Answer:
    """The answer, its target's in-flight count dropped when it is done (a stream: on close)."""
    if not isinstance(answer, StreamAnswer):
        slot.stats.in_flight -= 1
        return answer
    close, done = answer.close, False

    async def release() -> None:
        nonlocal done
        if not done:
            done = True
            slot.stats.in_flight -= 1
        await close()

    answer.close = release
    return answer


def _body(state: GatewayState, request: Request, provider: Provider) -> dict[str, Any]:
    """The body for ``provider``: the client's, with the system prompt that applies to this
    key and provider (chat and Messages only)."""
    if request.endpoint != "chat/completions" and request.dialect != "anthropic":
        return request.body
    prompt = system_prompt.effective(state.config.system_prompt, provider.config.system_prompt,
                                     request.key.system_prompt)
    return system_prompt.apply(request.dialect, request.body, prompt)


async def _attempts(state: GatewayState, target: Target, request: Request) -> Answer:
    """One target, with its provider's retries (jittered exponential backoff)."""
    provider = state.providers.providers[target.provider]
    request.sent = _body(state, request, provider)
    call = Call(request.endpoint, request.sent, target, upstream_streams(state, request, target), request.headers,
                request.dialect)
    ingress = INGRESS.get(request.dialect)
    if ingress is not None:
        prepared = await ingress.prepare(call, provider.config.type)
        if isinstance(prepared, JsonAnswer):
            return prepared  # answered without a call (count_tokens estimate)
        call = prepared
    retries, span = provider.config.retries, request.span
    for attempt in range(retries + 1):
        traced = None if span is None else _traced(span, provider, call)
        try:
            answer = await (provider.send(call) if traced is None else _send_traced(provider, call, traced))
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
    # A pool without a usable key stays so for a while: no point trying it again now.
    again = exc.reason not in ("status", "keys") or exc.status in RETRY_STATUSES
    return exc.retryable and again


async def _send_traced(provider: Provider, call: Call, traced: AttemptSpan) -> Answer:
    """``provider.send`` with the attempt visible to an upstream key pool (each key a span)."""
    token = KEY_TRIES.set(traced)
    try:
        return await provider.send(call)
    finally:
        KEY_TRIES.reset(token)


def _traced(span: RequestSpan, provider: Provider, call: Call) -> AttemptSpan:
    """The span of one attempt; the call carries its trace context upstream (the client's is
    replaced as a whole: a tracestate never outlives its traceparent)."""
    attempt = span.attempt(provider.name, provider.config.type, call.target.upstream_model,
                           target=call.target.exposed, stream=call.stream, base_url=provider.config.base_url)
    call.headers = {**{k: v for k, v in call.headers.items() if k not in TRACE_HEADERS}, **attempt.headers}
    return attempt
