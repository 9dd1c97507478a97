"""The HTTP endpoints, as plain ASGI callables (no per-request Request/Response objects on
the hot path): the proxied ``/v1/*`` calls, the model list, health and readiness.

The proxied calls only frame: :class:`HttpSink` writes what the exchange gives it (a JSON
answer, or SSE batches) and notices a client that leaves mid-stream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from vte_proxy.accounting import Accounting
from vte_proxy.auth import ClientKey, key_from_headers
from vte_proxy.dialect import OPENAI, Dialect
from vte_proxy.errors import GatewayError
from vte_proxy.exchange import Exchange, send_json
from vte_proxy.pipeline import FORWARDED_HEADERS
from vte_proxy.server import ON_DISCONNECT
from vte_proxy.state import Gateway, GatewayState, pinned_state

SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"request body is larger than {limit} bytes", "body_too_large")


def _check_declared_length(scope: Scope, limit: int) -> None:
    """413 at once when the declared Content-Length is over ``limit`` (nothing read yet)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise GatewayError(400, "invalid Content-Length", "invalid_request") from None
            if declared > limit:
                raise _too_large(limit)


async def read_body(receive: Receive, scope: Scope, limit: int, seconds: float) -> bytes:
    """The whole request body; 413 as soon as it would pass ``limit`` (before reading on),
    408 when it takes longer than ``seconds``."""
    _check_declared_length(scope, limit)
    try:
        async with asyncio.timeout(seconds):
            return await _receive_body(receive, limit)
    except TimeoutError:
        raise GatewayError(408, "timed out reading the request body", "body_timeout") from None


async def _receive_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError(400, "client disconnected", "client_disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def authenticate(state: GatewayState, scope: Scope) -> ClientKey:
    key = state.keys.authenticate(key_from_headers(scope["headers"]))
    if key is None:
        raise GatewayError(401, "missing or invalid API key", "invalid_api_key")
    return key


def authenticate_status(state: GatewayState, headers: Headers) -> Response | None:
    """None when the caller holds a key with ``status: true`` (HTTP Basic password, or any of
    the API key headers); otherwise the 401 that makes a browser ask for it."""
    presented: bytes | None = None
    auth = headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            _, _, password = base64.b64decode(auth[6:].strip(), validate=True).partition(b":")
            presented = password
        except (binascii.Error, ValueError):
            presented = None
    else:
        presented = key_from_headers([(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()])
    key = state.keys.authenticate(presented)
    if key is not None and key.status:
        return None
    err = GatewayError(401, "a key with status access is required (HTTP Basic: any user, the key as password)",
                       "invalid_api_key")
    return Response(err.json(), status_code=401, media_type="application/json",
                    headers={"www-authenticate": 'Basic realm="vte-proxy", charset="UTF-8"'})


def forwarded_headers(scope: Scope) -> dict[str, str]:
    out = {}
    for name, value in scope["headers"]:
        if name in FORWARDED_HEADERS:
            out[name.decode()] = value.decode("latin-1")
    return out


class HttpSink:
    """Writes an exchange's answer on an HTTP response. From the moment the request body has
    been read (:meth:`watch`) until the answer is complete it watches the client: a disconnect
    cancels the request's task at once, so the upstream call is cancelled too, whether its
    headers have arrived or not. Under vte-proxy's own protocol (:mod:`vte_proxy.server`) the
    connection's loss tells it directly; under another ASGI server a task waits on receive()
    (uvicorn's send() stays silent after a disconnect, so it is receive() that tells)."""

    __slots__ = ("_receive", "_scope", "_send", "_task", "_watcher", "gone", "started")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self._task: asyncio.Task[Any] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.started = False
        self.gone = False

    def watch(self) -> None:
        """Start watching for the client leaving (once its body is read: receive() is free)."""
        if self._task is not None:
            return
        self._task = task = asyncio.current_task()
        assert task is not None
        if ON_DISCONNECT in self._scope:
            self._scope[ON_DISCONNECT] = self._left
        else:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def json(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.close()  # uvicorn reports a disconnect once the response is complete: not a client leaving
        self.started = True
        await send_json(self._send, status, body, headers)

    async def open_stream(self, headers: Mapping[str, str]) -> None:
        self.watch()
        self.started = True
        raw = SSE_HEADERS + [(k.encode(), v.encode()) for k, v in headers.items()] if headers else SSE_HEADERS
        await self._send({"type": "http.response.start", "status": 200, "headers": raw})

    async def events(self, batch: list[bytes]) -> None:
        body = batch[0] + b"\n\n" if len(batch) == 1 else b"\n\n".join(batch) + b"\n\n"
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def end_stream(self) -> None:
        self.close()
        await self._send({"type": "http.response.body", "body": b""})

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._left()

    def _left(self) -> None:
        self.gone = True
        assert self._task is not None
        self._task.cancel()

    def close(self) -> None:
        """Stop watching (uvicorn also reports a disconnect once the response is complete)."""
        if self._scope.get(ON_DISCONNECT) is not None:
            self._scope[ON_DISCONNECT] = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None


class ProxyEndpoint:
    """``POST /v1/{endpoint}``: one proxied call."""

    def __init__(self, gateway: Gateway, accounting: Accounting, endpoint: str, dialect: Dialect = OPENAI) -> None:
        self.gateway = gateway
        self.accounting = accounting
        self.endpoint = endpoint
        self.dialect = dialect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = pinned_state(scope, self.gateway)
        server = state.config.server
        exchange = Exchange(state, self.accounting, self.endpoint, self.dialect)
        sink = HttpSink(scope, receive, send)

        async def read() -> bytes:
            body = await read_body(receive, scope, server.max_body_bytes, server.body_timeout)
            sink.watch()
            return body

        try:
            await exchange.run(sink, key_from_headers(scope["headers"]), read, forwarded_headers(scope))
        except asyncio.CancelledError:
            if not sink.gone:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        finally:
            sink.close()


def _model_object(name: str, provider: str, created: int, anthropic: bool = False) -> dict[str, Any]:
    """A model in OpenAI's shape; with Anthropic's fields too for the anthropic SDKs and Claude Code."""
    obj: dict[str, Any] = {"id": name, "object": "model", "created": created, "owned_by": provider}
    if anthropic:
        obj.update(type="model", display_name=name,
                   created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)))
    return obj


def _wants_anthropic(scope: Scope) -> bool:
    """The caller is an Anthropic client (its SDKs and Claude Code always send anthropic-version)."""
    return any(name == b"anthropic-version" for name, _ in scope["headers"])


def _model_list(data: list[dict[str, Any]], anthropic: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"object": "list", "data": data}
    if anthropic:  # one page: Anthropic's pagination fields, so its SDK's list() stops here
        out.update(has_more=False, first_id=data[0]["id"] if data else None,
                   last_id=data[-1]["id"] if data else None)
    return out


class ModelsEndpoint:
    """``GET /v1/models`` and ``GET /v1/models/{id}``: what this key may use."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = pinned_state(scope, self.gateway)
        key = authenticate(state, scope)
        created = int(state.loaded_at)
        anthropic = _wants_anthropic(scope)
        wanted = scope.get("path_params", {}).get("model_id")
        if wanted is None:
            data = [_model_object(e.name, _owner(e.route, e.targets[0].provider if e.targets else ""), created,
                                  anthropic) for e in state.routing.entries.values() if key.allows(e.name)]
            await send_json(send, 200, orjson.dumps(_model_list(data, anthropic)))
            return
        entry = state.routing.resolve(wanted)
        if entry is None or not key.allows(wanted):
            raise GatewayError(404, f"model {wanted!r} does not exist or is not served here", "model_not_found")
        owner = _owner(entry.route, entry.targets[0].provider if entry.targets else "")
        await send_json(send, 200, orjson.dumps(_model_object(wanted, owner, created, anthropic)))


def _owner(route: bool, provider: str) -> str:
    return "vte-proxy" if route else provider


class HealthEndpoint:
    """``/healthz`` (the process answers) and ``/readyz`` (a config is loaded, not draining)."""

    def __init__(self, gateway: Gateway, readiness: bool) -> None:
        self.gateway = gateway
        self.readiness = readiness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.readiness and not self.gateway.ready:
            reason = "draining" if self.gateway.draining else "no config loaded"
            await send_json(send, 503, orjson.dumps({"status": reason}))
            return
        await send_json(send, 200, orjson.dumps({"status": "ok", "time": time.time()}))
