"""``WS /v1/chat/completions/ws``: the seed's WebSocket protocol, kept for its clients.

One JSON chat request per text frame; the answer comes back as one text frame per SSE event
(``data: {...}``), ending with ``data: [DONE]``; an error is one ``{"error": {...}}`` frame.
Several requests may follow on one connection. The key comes from the ``Authorization``
header (or ``x-api-key``) or ``?api_key=``, is checked at connect and again for every request
(a reload may revoke it), and is never logged. Routing, stream policy, limits and accounting
are those of HTTP: the same :func:`vte_proxy.proxy.dispatch`.
"""

from __future__ import annotations

import contextlib

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from vte_proxy.accounting import finish, new_record
from vte_proxy.auth import key_from_headers
from vte_proxy.errors import GatewayError
from vte_proxy.proxy import StreamReply, dispatch, parse_request
from vte_proxy.state import Gateway

POLICY_VIOLATION = 1008


class ChatWebSocket:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        presented = key_from_headers(scope["headers"]) or ws.query_params.get("api_key", "").encode() or None
        if self.gateway.state.keys.authenticate(presented) is None:
            await ws.close(POLICY_VIOLATION, "missing or invalid API key")  # before accept: HTTP 403
            return
        await ws.accept()
        try:
            while True:
                text = await ws.receive_text()
                await self._answer(ws, presented, text)
        except WebSocketDisconnect:
            return
        except RuntimeError:  # a binary frame or a closed socket: nothing more to do
            if ws.client_state != WebSocketState.DISCONNECTED:
                with contextlib.suppress(Exception):
                    await ws.close(POLICY_VIOLATION, "text frames only")

    async def _answer(self, ws: WebSocket, presented: bytes | None, text: str) -> None:
        rec = new_record("chat/completions")
        state = self.gateway.state
        state.providers.acquire()
        try:
            key = state.keys.authenticate(presented)
            if key is None:
                raise GatewayError(401, "missing or invalid API key", "invalid_api_key")
            rec.key = key.name
            raw = text.encode()
            limit = state.config.server.max_body_bytes
            if len(raw) > limit:
                raise GatewayError(413, f"request is larger than {limit} bytes", "body_too_large")
            reply = await dispatch(state, "chat/completions", key, parse_request(raw), rec, {},
                                   force_stream_reply=True)
            assert isinstance(reply, StreamReply)  # force_stream_reply: always a stream
            rec.status = 200
            try:
                async for batch in reply.events:
                    for ev in batch:
                        await ws.send_text(ev.decode())
            finally:
                await reply.events.aclose()  # type: ignore[attr-defined]
                await reply.close()
        except GatewayError as err:
            rec.status, rec.error = err.status, err.code
            await ws.send_text(err.json().decode())
        finally:
            state.providers.release()
            finish(rec)
