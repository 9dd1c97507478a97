"""Plain ASGI middleware (never Starlette's base HTTP middleware class: it costs a task and a memory stream per
request and per SSE chunk): a last-resort error guard and the concurrency cap
(CORS is :mod:`vte_proxy.cors`).

Each reads the config of the state pinned for the request (:func:`~vte_proxy.state.pinned_state`,
the same state the exchange below uses), so a reload changes them for the next request.
"""

from __future__ import annotations

import logging
from collections.abc import Container

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


class Concurrency:
    """The answers one worker is giving: ``/v1`` HTTP requests and WebSocket answers alike
    (``server.max_concurrency`` caps them together)."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = 0

    def enter(self, limit: int) -> bool:
        """Take a place if one of ``limit`` is free."""
        if self.active >= limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1


def overloaded() -> GatewayError:
    return GatewayError(503, "the gateway is at its concurrency limit, retry later", "overloaded",
                        headers={"retry-after": "1"})


class GuardMiddleware:
    """Turns anything unexpected into an OpenAI-shaped 500 (never a traceback to the client)
    and caps concurrent ``/v1`` requests per worker (``server.max_concurrency``, 503 beyond).
    The proxied calls (``exchanges``) have their own error boundary, the exchange."""

    def __init__(self, app: ASGIApp, gateway: Gateway, accounting: Accounting,
                 concurrency: Concurrency | None = None, exchanges: Container[str] = ()) -> None:
        self.app = app
        self.gateway = gateway
        self.accounting = accounting
        self.concurrency = concurrency or Concurrency()
        # POST paths answered by an Exchange, itself the error boundary of its request: their
        # messages are passed on unwrapped (the wrapper cost a call for every frame of a stream).
        self.exchanges = exchanges

    @property
    def active(self) -> int:
        """The answers in progress in this worker (HTTP and WebSocket)."""
        return self.concurrency.active

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limited = scope["path"].startswith("/v1/")
        if limited and not self.concurrency.enter(pinned_state(scope, self.gateway).config.server.max_concurrency):
            await self._overloaded(scope, send)
            return
        # An exchange answers its own errors (also after a first byte, as an SSE error event):
        # its messages go out unwrapped, and the guard never writes a second answer over them.
        exchange = scope["method"] == "POST" and scope["path"] in self.exchanges
        started = exchange

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send if exchange else guarded_send)
        except Exception:
            log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            if not started:
                await render_error(send, GatewayError(500, "internal error", "internal_error"),
                                   dialect_for_path(scope["path"]), self._replies(scope))
        finally:
            if limited:
                self.concurrency.leave()

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
        await render_error(send, overloaded(), dialect_for_path(scope["path"]), self._replies(scope))
        self.accounting.finish(rec)  # counted, so alerts on 5xx see the refusals
