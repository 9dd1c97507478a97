"""A scripted Vertex AI express-mode endpoint (Starlette app) for tests.

Routes ``POST /v1/publishers/google/models/{model}:generateContent`` and
``...:streamGenerateContent?alt=sse``. It checks what real Vertex checks (the ``x-goog-api-key``
header, no ``?key=`` in the URL, a valid body via :func:`tests.vertex_wire.validate_gemini_request`)
and answers Google-shaped errors; otherwise it answers the next canned reply a test pushed::

    upstream = VertexUpstream(api_key="k")
    upstream.push_json(text_response("hello"))
    upstream.push_stream([text_event("he"), text_event("llo", finish="STOP", usage=USAGE)])
    upstream.push_stream([text_event("he")], abort=True)       # connection dropped, no finishReason
    upstream.push_error(429, "Resource exhausted")
    ... run ``upstream.app`` (uvicorn, or httpx.ASGITransport) ...
    upstream.requests[0].body["contents"]

Every request is recorded in ``upstream.requests`` (rejected ones too).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

try:
    from tests.vertex_wire import GeminiRequestError, validate_gemini_request
except ImportError:  # run with tests/ itself on sys.path
    from vertex_wire import GeminiRequestError, validate_gemini_request  # type: ignore[no-redef]

GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
                 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
USAGE = {"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8}


def google_error(status: int, message: str, google_status: str | None = None) -> dict[str, Any]:
    status_name = google_status or GOOGLE_STATUS.get(status, "UNKNOWN")
    return {"error": {"code": status, "message": message, "status": status_name}}


def text_event(text: str, finish: str | None = None, usage: dict[str, Any] | None = None,
               index: int = 0) -> dict[str, Any]:
    """A GenerateContentResponse with one candidate holding ``text`` (also a full non-stream answer)."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": index}
    if finish:
        candidate["finishReason"] = finish
    event: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-test"}
    if usage:
        event["usageMetadata"] = usage
    return event


def text_response(text: str, finish: str = "STOP", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return text_event(text, finish, usage or USAGE)


def function_call_response(name: str, args: dict[str, Any], thought_signature: str | None = None,
                           usage: dict[str, Any] | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if thought_signature:
        part["thoughtSignature"] = thought_signature
    candidate = {"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}
    return {"candidates": [candidate], "usageMetadata": usage or USAGE, "modelVersion": "gemini-test"}


@dataclass
class Reply:
    """One canned answer: a JSON body, SSE events, or a raw body; ``status`` for all of them."""

    status: int = 200
    json: Any = None
    events: list[Any] | None = None   # dicts are JSON-encoded; str sent as is after "data: "
    body: bytes | None = None
    content_type: str = "application/json"
    abort: bool = False               # streams: drop the connection after the events
    delay: float = 0.0                # seconds to wait before the answer / each event


@dataclass
class Recorded:
    method: str
    path: str
    model: str
    action: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    body: Any = None                  # the decoded JSON body (None when it was not JSON)
    answered: int = 0                 # the HTTP status answered
    error: str | None = None          # why the request was rejected, if it was


@dataclass
class VertexUpstream:
    api_key: str = "test-vertex-key"
    validate: bool = True
    url: str = ""  # where it is served (set by whoever serves ``app``)
    requests: list[Recorded] = field(default_factory=list)
    script: deque[Reply] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[
            Route("/v1/publishers/google/models/{rest:path}", self._handle, methods=["POST"]),
        ])

    # -- the script ------------------------------------------------------------------------
    def push(self, reply: Reply) -> None:
        self.script.append(reply)

    def push_json(self, body: Any, status: int = 200, delay: float = 0.0) -> None:
        self.push(Reply(status=status, json=body, delay=delay))

    def push_stream(self, events: list[Any], *, abort: bool = False, delay: float = 0.0) -> None:
        self.push(Reply(events=list(events), abort=abort, delay=delay))

    def push_error(self, status: int, message: str, google_status: str | None = None) -> None:
        self.push(Reply(status=status, json=google_error(status, message, google_status)))

    def push_raw(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.push(Reply(status=status, body=body, content_type=content_type))

    def reset(self) -> None:
        self.requests.clear()
        self.script.clear()

    # -- the endpoint ----------------------------------------------------------------------
    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        model, _, action = request.path_params["rest"].rpartition(":")
        record = Recorded(method=request.method, path=request.url.path, model=model, action=action,
                          query=dict(request.query_params), headers=dict(request.headers), raw=raw)
        self.requests.append(record)
        response = await self._answer(request, record)
        record.answered = response.status_code
        return response

    def _reject(self, record: Recorded, status: int, message: str) -> Response:
        record.error = message
        return JSONResponse(google_error(status, message), status_code=status)

    async def _answer(self, request: Request, record: Recorded) -> Response:
        if not record.model or record.action not in ("generateContent", "streamGenerateContent"):
            return self._reject(record, 404, f"Method not found: {record.action!r}")
        if "key" in record.query:
            return self._reject(record, 400, "API keys must be sent in the x-goog-api-key header, "
                                "not in the URL")
        key = request.headers.get("x-goog-api-key")
        if not key:
            return self._reject(record, 401, "Request is missing required authentication credential.")
        if key != self.api_key:
            return self._reject(record, 403, "API key not valid. Please pass a valid API key.")
        stream = record.action == "streamGenerateContent"
        if stream and record.query.get("alt") != "sse":
            return self._reject(record, 400, "streamGenerateContent needs alt=sse in this test server")
        try:
            record.body = json.loads(record.raw) if record.raw else None
        except ValueError:
            return self._reject(record, 400, "Invalid JSON payload received.")
        if self.validate:
            try:
                validate_gemini_request(record.body)
            except GeminiRequestError as exc:
                return self._reject(record, 400, str(exc))
        if not self.script:
            return self._reject(record, 500, "vertex test upstream: no canned reply left")
        reply = self.script.popleft()
        if reply.delay and reply.events is None:
            await asyncio.sleep(reply.delay)
        if reply.events is not None:
            if not stream:
                return self._reject(record, 500, "vertex test upstream: SSE reply scripted "
                                    "for a non-stream call")
            return StreamingResponse(self._events(reply), status_code=reply.status,
                                     media_type="text/event-stream")
        if reply.body is not None:
            return Response(reply.body, status_code=reply.status, media_type=reply.content_type)
        if stream and reply.status == 200:
            return self._reject(record, 500, "vertex test upstream: JSON reply scripted for a stream call")
        return JSONResponse(reply.json, status_code=reply.status)

    @staticmethod
    async def _events(reply: Reply) -> AsyncIterator[bytes]:
        for item in reply.events or ():
            if reply.delay:
                await asyncio.sleep(reply.delay)
            data = item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))
            yield f"data: {data}\r\n\r\n".encode()
        if reply.abort:
            raise ConnectionAbortedError("vertex test upstream: stream cut on purpose")
