"""The request pipeline below the exchange: route and authorise, apply the stream policy, call
the provider (retries, fall-over before the first byte), and hand the answer to shaping.

It knows nothing of transports, metrics or accounting: progress is reported through the
:class:`Tracker` the exchange passes in, and every failure is raised.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from vte_proxy.auth import ClientKey
from vte_proxy.errors import GatewayError, UpstreamError
from vte_proxy.providers.base import Answer, Call
from vte_proxy.record import RequestRecord
from vte_proxy.routing import Entry, Target
from vte_proxy.shaping import Plan, Reply, shape
from vte_proxy.state import GatewayState

log = logging.getLogger("vte_proxy.pipeline")

# Client headers passed to OpenAI-type upstreams; everything else (Authorization, cookies,
# hop-by-hop, Host) is never forwarded.
FORWARDED_HEADERS = (b"openai-beta", b"x-request-id")
RETRY_STATUSES = (502, 503, 504)


class Tracker(Protocol):
    """What the pipeline tells the exchange as the request goes down."""

    record: RequestRecord

    def dispatched(self, provider: str) -> None:
        """The request is being sent to ``provider`` (first try, retry or fall-over)."""


@dataclass(slots=True)
class Request:
    """One parsed client request, as the pipeline sees it."""

    endpoint: str
    body: dict[str, Any]
    key: ClientKey
    client_stream: bool
    headers: dict[str, str] = field(default_factory=dict)  # allow-listed client headers
    dialect: str = "openai"


async def dispatch(state: GatewayState, request: Request, tracker: Tracker) -> Reply:
    """Answer one parsed request; raises GatewayError for anything before the first byte."""
    entry = resolve(state, request, tracker.record)
    answer, target = await call_targets(state, entry, request, tracker)
    plan = Plan(request.endpoint, entry.name, target.provider, target.upstream_model, request.client_stream,
                keep_usage=request.endpoint == "responses" or wants_usage(request.body))
    return await shape(answer, plan)


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
                       tracker: Tracker) -> tuple[Answer, Target]:
    """Try the entry's targets in order, each with its provider's retries.

    Another try happens only for failures before the first byte: retries on connect errors,
    timeouts, 502/503/504; the next target also on 429 and any 5xx.
    """
    last: UpstreamError | None = None
    for target in entry.targets:
        tracker.dispatched(target.provider)
        try:
            return await _attempts(state, target, request), target
        except UpstreamError as exc:
            if not exc.retryable:
                raise
            last = exc
    assert last is not None
    raise last


async def _attempts(state: GatewayState, target: Target, request: Request) -> Answer:
    """One target, with its provider's retries (jittered exponential backoff)."""
    provider = state.providers.providers[target.provider]
    call = Call(request.endpoint, request.body, target, upstream_streams(state, request, target), request.headers,
                request.dialect)
    retries = provider.config.retries
    for attempt in range(retries + 1):
        try:
            return await provider.send(call)
        except UpstreamError as exc:
            log.warning("provider %s failed (%s, HTTP %d) for %s", target.provider, exc.reason, exc.status,
                        target.exposed)
            again = exc.reason != "status" or exc.status in RETRY_STATUSES
            if not (exc.retryable and again) or attempt == retries:
                raise
            await asyncio.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + random.random()))
    raise AssertionError("unreachable")
