"""Plain ASGI middleware (never Starlette's base HTTP middleware class: it costs a task and a memory stream per
request and per SSE chunk): a last-resort error guard and the concurrency cap
(CORS is :mod:`vte_proxy.cors`).

Each reads the *current* config on every request, so a reload changes them too.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vte_proxy.accounting import finish, new_record
from vte_proxy.errors import GatewayError
from vte_proxy.http import send_error
from vte_proxy.providers.base import ENDPOINTS
from vte_proxy.state import Gateway

log = logging.getLogger("vte_proxy.app")


class GuardMiddleware:
    """Turns anything unexpected into an OpenAI-shaped 500 (never a traceback to the client)
    and caps concurrent ``/v1`` requests per worker (``server.max_concurrency``, 503 beyond)."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limited = scope["path"].startswith("/v1/")
        if limited:
            limit = self.gateway.state.config.server.max_concurrency
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
                await send_error(send, GatewayError(500, "internal error", "internal_error"))
        finally:
            if limited:
                self.active -= 1


    @staticmethod
    async def _overloaded(scope: Scope, send: Send) -> None:
        endpoint = scope["path"][4:]
        rec = new_record(endpoint if endpoint in ENDPOINTS else "other")
        rec.status, rec.error = 503, "overloaded"
        await send_error(send, GatewayError(503, "the gateway is at its concurrency limit, retry later",
                                            "overloaded", headers={"retry-after": "1"}))
        finish(rec)  # counted, so alerts on 5xx see the refusals
