"""Plain ASGI middleware (never Starlette's base HTTP middleware class: it costs a task and a memory stream per
request and per SSE chunk): a last-resort error guard, the concurrency cap and CORS.

Each reads the config of the state pinned for the request (:func:`~vte_proxy.state.pinned_state`,
the same state the exchange below uses), so a reload changes them for the next request.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vte_proxy.accounting import Accounting
from vte_proxy.config import ErrorReply
from vte_proxy.dialect import dialect_for_path
from vte_proxy.errors import GatewayError
from vte_proxy.exchange import render_error
from vte_proxy.providers.base import ENDPOINTS, MESSAGES_ENDPOINTS
from vte_proxy.record import RequestRecord
from vte_proxy.state import Gateway, pinned_state

log = logging.getLogger("vte_proxy.app")


class GuardMiddleware:
    """Turns anything unexpected into an OpenAI-shaped 500 (never a traceback to the client)
    and caps concurrent ``/v1`` requests per worker (``server.max_concurrency``, 503 beyond)."""

    def __init__(self, app: ASGIApp, gateway: Gateway, accounting: Accounting) -> None:
        self.app = app
        self.gateway = gateway
        self.accounting = accounting
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limited = scope["path"].startswith("/v1/")
        if limited:
            limit = pinned_state(scope, self.gateway).config.server.max_concurrency
            if self.active >= limit:
                await self._overloaded(scope, send)
                return
            self.active += 1
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            if not started:
                await render_error(send, GatewayError(500, "internal error", "internal_error"),
                                   dialect_for_path(scope["path"]), self._replies(scope))
        finally:
            if limited:
                self.active -= 1

    def _replies(self, scope: Scope) -> tuple[ErrorReply, ...]:
        """The config's error_replies (none before a config is loaded)."""
        try:
            return pinned_state(scope, self.gateway).config.error_replies
        except RuntimeError:  # no config loaded yet
            return ()

    async def _overloaded(self, scope: Scope, send: Send) -> None:
        endpoint = scope["path"][4:]
        rec = RequestRecord.start(endpoint if endpoint in ENDPOINTS or endpoint in MESSAGES_ENDPOINTS else "other")
        rec.failed(503, "overloaded")
        await render_error(send, GatewayError(503, "the gateway is at its concurrency limit, retry later",
                                              "overloaded", headers={"retry-after": "1"}),
                           dialect_for_path(scope["path"]), self._replies(scope))
        self.accounting.finish(rec)  # counted, so alerts on 5xx see the refusals


class CORSMiddleware:
    """CORS from ``cors.allow_origins`` (``*`` allowed); preflights are answered here."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
                break
        cors = self.gateway.state.config.cors
        if origin is None or not cors.allow_origins:
            await self.app(scope, receive, send)
            return
        allowed = b"*" if "*" in cors.allow_origins else (origin if origin.decode("latin-1") in cors.allow_origins
                                                          else None)
        if allowed is None:
            await self.app(scope, receive, send)
            return
        headers = [(b"access-control-allow-origin", allowed), (b"vary", b"Origin")]
        if scope["method"] == "OPTIONS" and any(n == b"access-control-request-method" for n, _ in scope["headers"]):
            headers += [(b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                        (b"access-control-allow-headers", ", ".join(cors.allow_headers).encode()),
                        (b"access-control-max-age", str(cors.max_age).encode()),
                        (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return

        async def cors_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, cors_send)
