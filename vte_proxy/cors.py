"""CORS for browser clients (plain ASGI), from the ``cors`` section of the config pinned for the request.

An origin in ``cors.allow_origins`` (or ``*``) gets ``Access-Control-Allow-Origin`` on every
answer and its preflights are answered here. The preflight allows the request headers the
browser asks for (``Access-Control-Request-Headers``, reflected once each name is checked to be
a plain header token), because the SDKs send headers of their own that change between versions
(the OpenAI JS SDK's ``x-stainless-*``); ``cors.allow_headers`` replaces that with a fixed list.
Credentials (cookies) are never allowed: clients authenticate with their key in a header.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vte_proxy.config import CorsConfig
from vte_proxy.state import Gateway, pinned_state

_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9a-z-]{1,100}$")
# More names than any client sends; a longer list is cut, not reflected whole.
MAX_REFLECTED = 64
# Answer headers a browser script may read: the request id the SDKs report, and what a client
# needs to back off.
EXPOSE = (b"x-request-id, retry-after, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, "
          b"x-ratelimit-reset-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, "
          b"x-ratelimit-reset-tokens")


def allowed_origin(cors: CorsConfig, origin: bytes) -> bytes | None:
    """The ``Access-Control-Allow-Origin`` value for ``origin``, or None if it is not allowed."""
    if "*" in cors.allow_origins:
        return b"*"
    return origin if origin.decode("latin-1") in cors.allow_origins else None


def allow_headers(cors: CorsConfig, requested: bytes | None) -> bytes:
    """The preflight's ``Access-Control-Allow-Headers``: the configured list, or the requested
    names that are valid header tokens."""
    if cors.allow_headers is not None:
        return ", ".join(cors.allow_headers).encode()
    if not requested:
        return b""
    names = (n.strip().lower() for n in requested.split(b","))
    return b", ".join([n for n in names if _TOKEN.match(n)][:MAX_REFLECTED])


class CORSMiddleware:
    """CORS from ``cors.allow_origins`` (``*`` allowed); preflights are answered here."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan (no config yet), websocket
            await self.app(scope, receive, send)
            return
        cors = pinned_state(scope, self.gateway).config.cors
        if not cors.allow_origins:  # the hot path: nothing to look at
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        allowed = allowed_origin(cors, origin) if origin is not None else None
        if allowed is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await self._preflight(send, cors, allowed, headers.get(b"access-control-request-headers"))
            return
        extra = [(b"access-control-allow-origin", allowed), (b"access-control-expose-headers", EXPOSE),
                 (b"vary", b"Origin")]

        async def cors_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, cors_send)

    @staticmethod
    async def _preflight(send: Send, cors: CorsConfig, allowed: bytes, requested: bytes | None) -> None:
        headers = [(b"access-control-allow-origin", allowed),
                   (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                   (b"access-control-max-age", str(cors.max_age).encode()),
                   (b"vary", b"Origin, Access-Control-Request-Headers"), (b"content-length", b"0")]
        names = allow_headers(cors, requested)
        if names:
            headers.append((b"access-control-allow-headers", names))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
