"""The read-only status page (``GET /``), its JSON twin (``GET /status.json``) and the live
request log pushed to the page with Server-Sent Events (``GET /status/events``).

Everything here is guarded by HTTP Basic (any user name, a key with ``status: true`` as the
password). Keys are shown by name only; upstream URLs by host only.

Request and token totals come from the metrics, so with ``--workers N`` they cover every
worker; each key's use of its limits and budget comes from the limits store (with ``redis``:
every worker and replica); the live log and the providers' recent error rates are those of the worker that
serves the page.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from vte_proxy import __version__, metrics
from vte_proxy.accounting import Accounting
from vte_proxy.config import ProviderConfig
from vte_proxy.http import authenticate_status
from vte_proxy.keypool import KeyPool
from vte_proxy.providers.base import Provider
from vte_proxy.routing import Entry
from vte_proxy.state import Gateway, GatewayState
from vte_proxy.tracing import describe

if TYPE_CHECKING:
    from vte_proxy.discovery import Discovery, DiscoveryStatus

ERROR_WINDOW = 300.0  # seconds of history behind a provider's "recent error rate"
SUBSCRIBER_QUEUE = 1000
KEEP_ALIVE = 15.0  # seconds between SSE comments on an idle live log
FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           b'fill="#0f1318"/><path d="M3 5l3 3-3 3M8 11h5" stroke="#3fb950" stroke-width="1.6" fill="none" '
           b'stroke-linecap="round" stroke-linejoin="round"/></svg>')


def _pool_keys(provider: Provider | None) -> list[dict[str, Any]] | None:
    """A provider's upstream keys by name with their state (None without a pool)."""
    upstream = getattr(provider, "upstream", None)
    pool: KeyPool | None = getattr(upstream, "pool", None)
    if pool is None:
        return None
    left = pool.seconds_left()
    return [{"name": name, "state": st, "ready_in": left.get(name)} for name, st in pool.states().items()]


def _circuits(state: GatewayState, entry: Entry) -> list[dict[str, Any]]:
    """The circuit of each target of a route (closed until the route first used it)."""
    breakers = state.balancer.breakers()
    out = []
    for t in entry.targets:
        b = breakers.get((entry.name, t.exposed))
        out.append({"target": t.exposed, "state": b.state if b else "closed",
                    "consecutive_failures": b.consecutive if b else 0,
                    "probe_in": round(b.retry_after(), 1) if b and b.state == "open" else None})
    return out


class StatusPage:
    def __init__(self, gateway: Gateway, discovery: Discovery, accounting: Accounting) -> None:
        self.gateway = gateway
        self.discovery = discovery
        self.accounting = accounting
        self.started = time.time()
        self.recent: deque[tuple[float, str, bool]] = deque(maxlen=20_000)
        accounting.subscribers.add(self._on_request)
        self._queues: set[asyncio.Queue[bytes]] = set()
        self._html = resources.files("vte_proxy").joinpath("static/status.html").read_bytes()

    def routes(self) -> list[Route]:
        return [Route("/", self.page, methods=["GET"]), Route("/status.json", self.json, methods=["GET"]),
                Route("/status/events", self.events, methods=["GET"]),
                Route("/favicon.svg", self.favicon, methods=["GET"])]

    def _on_request(self, entry: dict[str, Any]) -> None:
        ok = entry["status"] < 400
        if entry["provider"] != "-":
            self.recent.append((time.monotonic(), entry["provider"], ok))
        if self._queues:
            data = b"data: " + orjson.dumps(entry) + b"\n\n"
            for q in self._queues:
                if q.qsize() < SUBSCRIBER_QUEUE:  # a slow page loses lines, the gateway never waits
                    q.put_nowait(data)

    def snapshot(self) -> dict[str, Any]:
        """The page's facts (also ``/status.json``), all from one pinned state."""
        g = self.gateway
        state = g.state
        per_model = metrics.model_totals()
        return {
            "version": __version__,
            "started_at": self.started,
            "ready": g.ready,
            "worker": {"pid": os.getpid(), "multiprocess": metrics.multiprocess_dir() is not None},
            "config": _config_facts(g, state),
            "providers": _providers(state, self.discovery.status, _recent_by_provider(self.recent)),
            "models": _models(state, per_model),
            "unknown_model_requests": _unknown_requests(per_model),
            "keys": [{"name": k.name, "status": k.status, "models": list(k.models)} for k in state.config.keys],
            "tracing": describe(self.accounting.tracing.settings),
            "totals": {k: sum(m[k] for m in per_model.values()) for k in _ZERO},
            "log": list(reversed(self.accounting.recent)),
        }

    async def page(self, request: Request) -> Response:
        denied = authenticate_status(self.gateway.state, request.headers)
        if denied is not None:
            return denied
        return Response(self._html, media_type="text/html; charset=utf-8",
                        headers={"cache-control": "no-store", "x-content-type-options": "nosniff",
                                 "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"})

    async def favicon(self, request: Request) -> Response:
        return Response(FAVICON, media_type="image/svg+xml", headers={"cache-control": "max-age=86400"})

    async def json(self, request: Request) -> Response:
        denied = authenticate_status(self.gateway.state, request.headers)
        if denied is not None:
            return denied
        snapshot = self.snapshot()
        await self._key_limits(snapshot["keys"])
        return Response(orjson.dumps(snapshot), media_type="application/json",
                        headers={"cache-control": "no-store"})

    async def _key_limits(self, keys: list[dict[str, Any]]) -> None:
        """Each key's use of its own limits and budget, as the (shared) store counts them."""
        limiter = self.gateway.state.limiter
        for key in keys:
            key["limits"] = await limiter.key_usage(key["name"])

    async def events(self, request: Request) -> Response:
        denied = authenticate_status(self.gateway.state, request.headers)
        if denied is not None:
            return denied
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._queues.add(queue)

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 3000\n: connected\n\n"
                idle = 0.0
                while not self.gateway.draining:  # checked every second: a shutdown is not held up
                    try:
                        yield await asyncio.wait_for(queue.get(), 1.0)
                        idle = 0.0
                    except TimeoutError:
                        idle += 1.0
                        if idle >= KEEP_ALIVE:
                            idle = 0.0
                            yield b": keep-alive\n\n"
            finally:
                self._queues.discard(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


_ZERO = {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0}


def _config_facts(g: Gateway, state: GatewayState) -> dict[str, Any]:
    """Which config serves, since when, and how reloads went (the last failure's message)."""
    failure = g.last_failure
    return {"path": g.config_path, "hash": state.loaded.sha256[:12], "loaded_at": state.loaded_at,
            "reloads": dict(g.reloads),
            "last_reload_error": None if failure is None else {"at": failure.at, "message": failure.message}}


def _recent_by_provider(recent: Iterable[tuple[float, str, bool]]) -> dict[str, list[int]]:
    """Per provider, [requests, errors] over the last :data:`ERROR_WINDOW` seconds."""
    cutoff = time.monotonic() - ERROR_WINDOW
    window: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for at, provider, ok in recent:
        if at >= cutoff:
            window[provider][0] += 1
            window[provider][1] += 0 if ok else 1
    return window


def _providers(state: GatewayState, discovery: Mapping[str, DiscoveryStatus],
               window: Mapping[str, list[int]]) -> list[dict[str, Any]]:
    return [_provider(p, state, discovery.get(p.name), window.get(p.name, [0, 0])) for p in state.config.providers]


def _provider(p: ProviderConfig, state: GatewayState, disc: DiscoveryStatus | None,
              recent: list[int]) -> dict[str, Any]:
    """One provider: where it is (host only), what it exposes, discovery, recent error rate."""
    total, errors = recent
    return {
        "name": p.name, "type": p.type, "prefix": p.prefix,
        "host": urlsplit(p.base_url).hostname if p.base_url else None,
        "models": state.routing.counts.get(p.name, 0),
        "stream_mode": state.stream_modes[p.name],
        "discovery": None if disc is None else {"enabled": True, "last_ok": disc.last_ok,
                                                "last_error": disc.last_error},
        "recent_requests": total, "recent_errors": errors,
        "error_rate": round(errors / total, 4) if total else 0.0,
        "upstream_keys": _pool_keys(state.providers.providers.get(p.name)),
    }


def _models(state: GatewayState, per_model: Mapping[str, dict[str, int]]) -> list[dict[str, Any]]:
    return [_model(entry, per_model.get(entry.name) or _ZERO, state) for entry in state.routing.entries.values()]


def _model(entry: Entry, totals: dict[str, int], state: GatewayState) -> dict[str, Any]:
    """One exposed name: a model (its provider and upstream id) or a route (its targets, strategy
    and circuits), and its totals."""
    t = None if entry.route or not entry.targets else entry.targets[0]
    return {"id": entry.name, "route": entry.route,
            "provider": None if t is None else t.provider,
            "upstream": None if t is None else t.upstream_model,
            "targets": [x.exposed for x in entry.targets] if entry.route else None,
            "strategy": entry.strategy if entry.route else None,
            "circuits": _circuits(state, entry) if entry.route else None, **totals}


def _unknown_requests(per_model: Mapping[str, dict[str, int]]) -> int:
    """Requests for names that are not in the config (counted as ``model="unknown"``)."""
    unknown = per_model.get("unknown")
    return unknown["requests"] if unknown else 0
