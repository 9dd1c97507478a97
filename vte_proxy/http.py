"""The HTTP endpoints, as plain ASGI callables (no per-request Request/Response objects on
the hot path): the proxied ``/v1/*`` calls, the model list, health and readiness.
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

from vte_proxy.accounting import finish, new_record
from vte_proxy.auth import ClientKey, key_from_headers
from vte_proxy.errors import GatewayError
from vte_proxy.proxy import FORWARDED_HEADERS, JsonReply, dispatch, parse_request
from vte_proxy.state import Gateway, GatewayState

JSON = (b"content-type", b"application/json")
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


async def send_json(send: Send, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
    raw = [JSON, (b"content-length", str(len(body)).encode())]
    if headers:
        raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, err: GatewayError) -> None:
    await send_json(send, err.status, err.json(), err.headers)


async def read_body(receive: Receive, scope: Scope, limit: int, seconds: float) -> bytes:
    """The whole request body; 413 as soon as it would pass ``limit`` (before reading on)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                if int(value) > limit:
                    raise GatewayError(413, f"request body is larger than {limit} bytes", "body_too_large")
            except ValueError:
                raise GatewayError(400, "invalid Content-Length", "invalid_request") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise GatewayError(400, "client disconnected", "client_disconnected")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise GatewayError(413, f"request body is larger than {limit} bytes", "body_too_large")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise GatewayError(408, "timed out reading the request body", "body_timeout") from None
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


class ProxyEndpoint:
    """``POST /v1/{endpoint}``: one proxied call."""

    def __init__(self, gateway: Gateway, endpoint: str) -> None:
        self.gateway = gateway
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rec = new_record(self.endpoint)
        state = self.gateway.state  # this request keeps this state to its end
        providers = state.providers
        providers.acquire()
        started = False
        try:
            key = authenticate(state, scope)
            rec.key = key.name
            server = state.config.server
            body = parse_request(await read_body(receive, scope, server.max_body_bytes, server.body_timeout))
            reply = await dispatch(state, self.endpoint, key, body, rec, forwarded_headers(scope))
            if isinstance(reply, JsonReply):
                rec.status = reply.status
                await send_json(send, reply.status, reply.body, reply.headers)
                return
            rec.status = 200
            started = True
            await stream_reply(reply.events, reply.close, receive, send)
        except GatewayError as err:
            rec.status, rec.error = err.status, err.code
            if not started:
                await send_error(send, err)
        finally:
            providers.release()
            finish(rec)


async def stream_reply(events: Any, close: Any, receive: Receive, send: Send) -> None:
    """Send SSE events as they come; a client disconnect cancels the stream and closes the
    upstream at once (uvicorn's send() stays silent after a disconnect, so watch receive())."""
    task = asyncio.current_task()
    assert task is not None
    gone = done = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        if not done:  # uvicorn also reports a disconnect once the response is complete
            gone = True
            task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        async for batch in events:
            body = batch[0] + b"\n\n" if len(batch) == 1 else b"\n\n".join(batch) + b"\n\n"
            await send({"type": "http.response.body", "body": body, "more_body": True})
        done = True
        await send({"type": "http.response.body", "body": b""})
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
    finally:
        watcher.cancel()
        await events.aclose()
        await close()


def _model_object(name: str, provider: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": provider}


class ModelsEndpoint:
    """``GET /v1/models`` and ``GET /v1/models/{id}``: what this key may use."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.gateway.state
        try:
            key = authenticate(state, scope)
            created = int(state.loaded_at)
            wanted = scope.get("path_params", {}).get("model_id")
            if wanted is not None:
                entry = state.routing.resolve(wanted)
                if entry is None or not key.allows(wanted):
                    raise GatewayError(404, f"model {wanted!r} does not exist or is not served here",
                                       "model_not_found")
                owner = "vte-proxy" if entry.route else entry.targets[0].provider
                await send_json(send, 200, orjson.dumps(_model_object(wanted, owner, created)))
                return
            data = [_model_object(e.name, "vte-proxy" if e.route else e.targets[0].provider, created)
                    for e in state.routing.entries.values() if key.allows(e.name)]
            await send_json(send, 200, orjson.dumps({"object": "list", "data": data}))
        except GatewayError as err:
            await send_error(send, err)


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
