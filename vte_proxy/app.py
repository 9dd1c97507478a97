"""The ASGI application: routes, middleware and the lifespan (reload watcher, discovery).

``create_app()`` builds it for a config path; uvicorn workers call :func:`app_from_env`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from types import FrameType

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from vte_proxy import metrics
from vte_proxy.accounting import Accounting
from vte_proxy.cors import CORSMiddleware
from vte_proxy.dialect import ANTHROPIC, dialect_for_path
from vte_proxy.discovery import Discovery
from vte_proxy.errors import GatewayError
from vte_proxy.http import HealthEndpoint, ModelsEndpoint, ProxyEndpoint, authenticate_status
from vte_proxy.limits import Stores
from vte_proxy.memory import QUIET_SECONDS, MemoryWatcher, tune_collector
from vte_proxy.middleware import Concurrency, GuardMiddleware
from vte_proxy.providers.base import ENDPOINTS, MESSAGES_ENDPOINTS
from vte_proxy.reload import install_sighup, poll_config, watch_config
from vte_proxy.state import Gateway
from vte_proxy.status import StatusPage
from vte_proxy.tracing import Tracing
from vte_proxy.upstream import ConnectorFactory
from vte_proxy.websocket import ChatWebSocket

log = logging.getLogger("vte_proxy.app")

# How long the first discovery round may hold up the start.
FIRST_DISCOVERY_TIMEOUT = 15.0


def _error_response(path: str, err: GatewayError) -> Response:
    return Response(dialect_for_path(path).error_body(err), status_code=err.status, media_type="application/json",
                    headers=err.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    err = GatewayError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                       "not_found" if exc.status_code == 404 else "method_not_allowed",
                       headers=dict(exc.headers or {}))
    return _error_response(request.url.path, err)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    """What a non-proxied endpoint (the model list) raised, in the dialect of its path."""
    assert isinstance(exc, GatewayError)
    return _error_response(request.url.path, exc)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Logged once, by GuardMiddleware, which sees the exception re-raised.
    return _error_response(request.url.path, GatewayError(500, "internal error", "internal_error"))


async def _metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    if gateway.state.config.metrics.auth:
        denied = authenticate_status(gateway.state, request.headers)
        if denied is not None:
            return denied
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


async def _head_ok(request: Request) -> Response:
    """``HEAD /``: the reachability check of Claude Code and the anthropic SDKs; it tells nothing."""
    return Response(status_code=200)


def _drain_on_sigterm(gateway: Gateway) -> None:
    """Readiness turns 503 the moment SIGTERM arrives; uvicorn's own handler then drains."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        gateway.draining = True
        if callable(previous):
            previous(signum, frame)

    with contextlib.suppress(ValueError):  # not in the main thread (tests): uvicorn handles it
        signal.signal(signal.SIGTERM, handler)


class FastPath:
    """``POST /v1/{endpoint}`` straight to its endpoint: the hot path skips Starlette's router
    and its exception middleware (and their per-message send wrappers). Everything else, and
    every error path, is Starlette's."""

    def __init__(self, app: ASGIApp, routes: dict[str, ASGIApp]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.routes.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Lifespan:
    """Start-up and shut-down of the process-wide tasks: the first config load and discovery
    round, the config watchers, SIGHUP and SIGTERM handling, the memory watcher, and at the end
    the last export of queued trace spans."""

    def __init__(self, gateway: Gateway, discovery: Discovery, memory: MemoryWatcher,
                 tracing: Tracing | None = None) -> None:
        self.gateway = gateway
        self.discovery = discovery
        self.memory = memory
        self.tracing = tracing
        self._hup_tasks: set[asyncio.Task[bool]] = set()

    @contextlib.asynccontextmanager
    async def __call__(self, app: Starlette) -> AsyncIterator[None]:
        gateway = self.gateway
        gateway.load_initial()
        await self.discovery.first_round(FIRST_DISCOVERY_TIMEOUT)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(watch_config(gateway, stop)), asyncio.create_task(poll_config(gateway, stop)),
                 asyncio.create_task(self.memory.run(stop))]
        install_sighup(gateway, self._hup_tasks)
        _drain_on_sigterm(gateway)
        log.warning("vte-proxy serving %d models from %s", len(gateway.state.routing.entries), gateway.config_path)
        try:
            yield
        finally:
            gateway.draining = True
            stop.set()
            self.discovery.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await gateway.aclose()
            if self.tracing is not None:
                await self.tracing.aclose()


def _routes(gateway: Gateway, accounting: Accounting, status: StatusPage,
            proxied: dict[str, ProxyEndpoint], concurrency: Concurrency) -> list[BaseRoute]:
    models = ModelsEndpoint(gateway)
    return [
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in proxied.items()),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models, methods=["GET"]),
        WebSocketRoute("/v1/chat/completions/ws", ChatWebSocket(gateway, accounting, concurrency)),
        Route("/healthz", HealthEndpoint(gateway, readiness=False), methods=["GET"]),
        Route("/readyz", HealthEndpoint(gateway, readiness=True), methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/", _head_ok, methods=["HEAD"]),  # before the status page: GET / stays its own
        *status.routes(),
    ]


def create_app(config_path: str, connector: ConnectorFactory | None = None,
               quiet_seconds: float = QUIET_SECONDS, serving: bool = False) -> ASGIApp:
    """The gateway for ``config_path``; the config is loaded (and must be valid) at startup.
    ``connector``: the upstream connector factory (tests inject one); ``quiet_seconds``: how
    long traffic must have stopped before memory is given back; ``serving``: the process serves
    this one app (``vte-proxy serve``), so once started the collector is tuned for it
    (:func:`~vte_proxy.memory.tune_collector`; a process that builds many apps, such as the
    tests, must not freeze them all).

    The process-wide state is built here and passed to whoever needs it: the gateway (the
    current config state, and the stores of the limit counters, which outlive every config),
    accounting (metrics, the live request log, and the tracing that every config swap
    reconfigures), the status page and the memory watcher."""
    gateway = Gateway(config_path, connector, Stores())
    tracing = Tracing()
    gateway.on_swap.append(lambda new: tracing.configure(new.config.telemetry))
    accounting = Accounting(tracing=tracing)
    discovery = Discovery(gateway)
    status = StatusPage(gateway, discovery, accounting)
    memory = MemoryWatcher(lambda: accounting.finished, gateway.in_flight, quiet_seconds,
                           on_start=tune_collector if serving else None)
    proxied = {f"/v1/{ep}": ProxyEndpoint(gateway, accounting, ep) for ep in ENDPOINTS}
    proxied.update({f"/v1/{ep}": ProxyEndpoint(gateway, accounting, ep, ANTHROPIC) for ep in MESSAGES_ENDPOINTS})
    handlers = {HTTPException: _http_error, GatewayError: _gateway_error, Exception: _internal_error}
    concurrency = Concurrency()  # server.max_concurrency counts HTTP requests and WebSocket answers together
    app = Starlette(routes=_routes(gateway, accounting, status, proxied, concurrency),
                    lifespan=Lifespan(gateway, discovery, memory, tracing), exception_handlers=handlers)
    app.router.redirect_slashes = False  # its 307 would build a Location from the client's Host header: 404 instead
    app.state.gateway = gateway
    app.state.discovery = discovery
    app.state.accounting = accounting
    return GuardMiddleware(CORSMiddleware(FastPath(app, dict(proxied)), gateway), gateway, accounting, concurrency,
                           exchanges=frozenset(proxied))


def app_from_env() -> ASGIApp:
    """The factory uvicorn workers call (``--workers N``): the config path comes from VTE_CONFIG."""
    from vte_proxy.logs import setup_logging

    setup_logging(os.environ.get("VTE_LOG_LEVEL", "info"), os.environ.get("VTE_LOG_FORMAT", "text"))
    return create_app(os.environ.get("VTE_CONFIG", "gateway.yaml"), serving=True)
