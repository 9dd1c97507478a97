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
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from vte_proxy import metrics
from vte_proxy.cors import CORSMiddleware
from vte_proxy.discovery import Discovery
from vte_proxy.errors import GatewayError
from vte_proxy.http import HealthEndpoint, ModelsEndpoint, ProxyEndpoint, authenticate_status
from vte_proxy.memory import QUIET_SECONDS, release_after_bursts
from vte_proxy.middleware import GuardMiddleware
from vte_proxy.providers.base import ENDPOINTS
from vte_proxy.reload import install_sighup, poll_config, watch_config
from vte_proxy.state import Gateway
from vte_proxy.status import StatusPage
from vte_proxy.upstream import ConnectorFactory
from vte_proxy.websocket import ChatWebSocket

log = logging.getLogger("vte_proxy.app")

# How long the first discovery round may hold up the start.
FIRST_DISCOVERY_TIMEOUT = 15.0


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    err = GatewayError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                       "not_found" if exc.status_code == 404 else "method_not_allowed")
    return Response(err.json(), status_code=err.status, media_type="application/json", headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Logged once, by GuardMiddleware, which sees the exception re-raised.
    return Response(GatewayError(500, "internal error", "internal_error").json(), status_code=500,
                    media_type="application/json")


async def _metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    if gateway.state.config.metrics.auth:
        denied = authenticate_status(gateway.state, request.headers)
        if denied is not None:
            return denied
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


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


def create_app(config_path: str, connector: ConnectorFactory | None = None,
               quiet_seconds: float = QUIET_SECONDS) -> ASGIApp:
    """The gateway for ``config_path``; the config is loaded (and must be valid) at startup.
    ``quiet_seconds``: how long traffic must have stopped before memory is given back."""
    gateway = Gateway(config_path, connector)
    discovery = Discovery(gateway)
    status = StatusPage(gateway, discovery)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway.load_initial()
        await discovery.first_round(FIRST_DISCOVERY_TIMEOUT)
        stop = asyncio.Event()
        hup_tasks: set[asyncio.Task[bool]] = set()
        tasks = [asyncio.create_task(watch_config(gateway, stop)), asyncio.create_task(poll_config(gateway, stop)),
                 asyncio.create_task(release_after_bursts(gateway.in_flight, stop, quiet_seconds))]
        install_sighup(gateway, hup_tasks)
        _drain_on_sigterm(gateway)
        log.warning("vte-proxy serving %d models from %s", len(gateway.state.routing.entries), config_path)
        try:
            yield
        finally:
            gateway.draining = True
            stop.set()
            discovery.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await gateway.aclose()

    proxied = {f"/v1/{ep}": ProxyEndpoint(gateway, ep) for ep in ENDPOINTS}
    routes: list[Any] = [
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in proxied.items()),
        Route("/v1/models", ModelsEndpoint(gateway), methods=["GET"]),
        Route("/v1/models/{model_id:path}", ModelsEndpoint(gateway), methods=["GET"]),
        WebSocketRoute("/v1/chat/completions/ws", ChatWebSocket(gateway)),
        Route("/healthz", HealthEndpoint(gateway, readiness=False), methods=["GET"]),
        Route("/readyz", HealthEndpoint(gateway, readiness=True), methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
        *status.routes(),
    ]
    handlers = {HTTPException: _http_error, Exception: _internal_error}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.router.redirect_slashes = False  # its 307 would build a Location from the client's Host header: 404 instead
    app.state.gateway = gateway
    app.state.discovery = discovery
    return GuardMiddleware(CORSMiddleware(FastPath(app, dict(proxied)), gateway), gateway)


def app_from_env() -> ASGIApp:
    """The factory uvicorn workers call (``--workers N``): the config path comes from VTE_CONFIG."""
    from vte_proxy.logs import setup_logging

    setup_logging(os.environ.get("VTE_LOG_LEVEL", "info"), os.environ.get("VTE_LOG_FORMAT", "text"))
    return create_app(os.environ.get("VTE_CONFIG", "gateway.yaml"))
