"""``WS /v1/chat/completions/ws``: the seed's WebSocket protocol, kept for its clients.

One JSON chat request per text frame; the answer comes back as one text frame per SSE event
(``data: {...}``), ending with ``data: [DONE]``; an error is one ``{"error": {...}}`` frame.
Several requests may follow on one connection. The key comes from the ``Authorization``
header (or ``x-api-key``) or ``?api_key=``, is checked at connect and again for every request
(a reload may revoke it), and is never logged. Each request is an
:class:`~vte_proxy.exchange.Exchange`, exactly as over HTTP: this module only frames.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from vte_proxy.accounting import Accounting
from vte_proxy.auth import key_from_headers
from vte_proxy.dialect import OPENAI
from vte_proxy.errors import GatewayError
from vte_proxy.exchange import Exchange
from vte_proxy.middleware import Concurrency, overloaded
from vte_proxy.state import Gateway

POLICY_VIOLATION = 1008


class WebSocketSink:
    """Writes an exchange's answer as text frames: one per JSON answer or SSE event."""

    __slots__ = ("gone", "started", "ws")

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.started = False
        self.gone = False

    async def json(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.started = True
        await self.ws.send_text(body.decode())

    async def open_stream(self, headers: Mapping[str, str]) -> None:
        self.started = True

    async def events(self, batch: list[bytes]) -> None:
        for ev in batch:
            await self.ws.send_text(ev.decode())

    async def end_stream(self) -> None:
        return None


async def _next_text(ws: WebSocket) -> str | None:
    """The next text frame; None for a binary one (the protocol is text only)."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text = message.get("text")
    return text if isinstance(text, str) else None


class ChatWebSocket:
    def __init__(self, gateway: Gateway, accounting: Accounting, concurrency: Concurrency | None = None) -> None:
        self.gateway = gateway
        self.accounting = accounting
        self.concurrency = concurrency or Concurrency()  # shared with the HTTP requests' cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        presented = key_from_headers(scope["headers"]) or ws.query_params.get("api_key", "").encode() or None
        if self.gateway.state.keys.authenticate(presented) is None:
            await ws.close(POLICY_VIOLATION, "missing or invalid API key")  # before accept: HTTP 403
            return
        await ws.accept()
        try:
            while (text := await _next_text(ws)) is not None:
                await self._answer(ws, presented, text)
        except WebSocketDisconnect:
            return
        except RuntimeError:  # a closed socket: nothing more to do
            pass
        if ws.client_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(POLICY_VIOLATION, "text frames only")

    async def _answer(self, ws: WebSocket, presented: bytes | None, text: str) -> None:
        state = self.gateway.state  # each request on the connection takes the current state
        exchange = Exchange(state, self.accounting, "chat/completions", OPENAI)
        limit = state.config.server.max_body_bytes
        admitted = self.concurrency.enter(state.config.server.max_concurrency)

        async def read() -> bytes:
            if not admitted:
                raise overloaded()  # an error frame, counted like the HTTP refusals
            raw = text.encode()
            if len(raw) > limit:
                raise GatewayError(413, f"request is larger than {limit} bytes", "body_too_large")
            return raw

        try:
            await exchange.run(WebSocketSink(ws), presented, read, {}, stream_reply=True)
        finally:
            if admitted:
                self.concurrency.leave()
