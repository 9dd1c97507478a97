"""A scripted Anthropic Messages API endpoint (Starlette app) for tests.

Routes ``POST /v1/messages``, ``POST /v1/messages/count_tokens`` and ``GET /v1/models``. It
checks what the real API checks (``x-api-key``, an ``anthropic-version`` header, a body valid
for the ``anthropic`` SDK's own request types: tests/anthropic_wire.py) and answers
Anthropic-shaped errors; otherwise the next canned reply a test pushed::

    upstream = AnthropicUpstream(api_key="k")
    upstream.push_json(text_message("hello"))
    upstream.push_stream(message_events(text_message("hello")))    # real named SSE events
    upstream.push_stream(message_events(msg)[:4], abort=True)      # connection cut mid-answer
    upstream.push_error(529, "Overloaded")
    ... run ``upstream.app`` (uvicorn, or httpx.ASGITransport) ...
    upstream.requests[0].body["messages"]

With the script empty, ``upstream.responder`` (if set) answers: a function of the request body
that returns a complete message (streamed as events when the request streams).
``count_tokens`` answers ``{"input_tokens": upstream.token_count}`` unless a reply is scripted;
``/v1/models`` lists ``upstream.models``. Every request is recorded (rejected ones too).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

try:
    from tests.anthropic_wire import MessagesRequestError, validate_messages_request
except ImportError:  # run with tests/ itself on sys.path
    from anthropic_wire import MessagesRequestError, validate_messages_request  # type: ignore[no-redef]

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               529: "overloaded_error"}
USAGE = {"input_tokens": 12, "output_tokens": 4, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def anthropic_error(status: int, message: str, kind: str | None = None) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind or ERROR_TYPES.get(status, "api_error"), "message": message}}


def message(content: list[dict[str, Any]], stop_reason: str = "end_turn", usage: dict[str, Any] | None = None,
            model: str = "claude-test") -> dict[str, Any]:
    """A complete Messages answer."""
    return {"id": "msg_01test", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None, "usage": {**USAGE, **(usage or {})}}


def text_message(text: str, usage: dict[str, Any] | None = None, stop_reason: str = "end_turn") -> dict[str, Any]:
    return message([{"type": "text", "text": text}], stop_reason, usage)


def tool_use_message(name: str, tool_input: dict[str, Any], tool_id: str = "toolu_01abc",
                     thinking: tuple[str, str] | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """A tool_use answer, optionally after a (thinking text, signature) block."""
    blocks: list[dict[str, Any]] = []
    if thinking:
        blocks.append({"type": "thinking", "thinking": thinking[0], "signature": thinking[1]})
    blocks.append({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input})
    return message(blocks, "tool_use", usage)


def _block_events(index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
    kind = block["type"]
    empty = {"text": {"type": "text", "text": ""}, "thinking": {"type": "thinking", "thinking": "", "signature": ""},
             "tool_use": {**block, "input": {}}}.get(kind, block)
    out = [{"type": "content_block_start", "index": index, "content_block": empty}]
    if kind == "text":
        text = block["text"]
        half = len(text) // 2
        deltas = [{"type": "text_delta", "text": part} for part in (text[:half], text[half:]) if part]
    elif kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": block["thinking"]},
                  {"type": "signature_delta", "signature": block["signature"]}]
    elif kind == "tool_use":
        raw = json.dumps(block["input"])
        deltas = [{"type": "input_json_delta", "partial_json": raw[:5]},
                  {"type": "input_json_delta", "partial_json": raw[5:]}]
    else:
        deltas = []
    out += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
    return [*out, {"type": "content_block_stop", "index": index}]


def message_events(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The event sequence the real API streams for ``answer`` (a complete message)."""
    usage = answer["usage"]
    start = {**answer, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, block in enumerate(answer["content"]):
        events += _block_events(index, block)
    events.append({"type": "message_delta", "delta": {"stop_reason": answer["stop_reason"], "stop_sequence": None},
                   "usage": {"output_tokens": usage["output_tokens"]}})
    return [*events, {"type": "message_stop"}]


@dataclass
class Reply:
    """One canned answer: a JSON body, SSE events, or a raw body; ``status`` for all of them."""

    status: int = 200
    json: Any = None
    events: list[dict[str, Any]] | None = None
    body: bytes | None = None
    content_type: str = "application/json"
    abort: bool = False               # streams: drop the connection after the events
    delay: float = 0.0                # seconds to wait before the answer / each event
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    body: Any = None
    answered: int = 0
    error: str | None = None


@dataclass
class AnthropicUpstream:
    api_key: str = "test-anthropic-key"
    validate: bool = True
    token_count: int = 42
    models: list[str] = field(default_factory=lambda: ["claude-test", "claude-other"])
    requests: list[Recorded] = field(default_factory=list)
    script: deque[Reply] = field(default_factory=deque)
    responder: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[
            Route("/v1/messages", self._messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ])

    # -- the script ------------------------------------------------------------------------
    def push(self, reply: Reply) -> None:
        self.script.append(reply)

    def push_json(self, body: Any, status: int = 200, delay: float = 0.0,
                  headers: dict[str, str] | None = None) -> None:
        self.push(Reply(status=status, json=body, delay=delay, headers=headers or {}))

    def push_stream(self, events: list[dict[str, Any]], *, abort: bool = False, delay: float = 0.0) -> None:
        self.push(Reply(events=list(events), abort=abort, delay=delay))

    def push_error(self, status: int, message: str, kind: str | None = None,
                   headers: dict[str, str] | None = None) -> None:
        self.push(Reply(status=status, json=anthropic_error(status, message, kind), headers=headers or {}))

    def push_raw(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.push(Reply(status=status, body=body, content_type=content_type))

    def reset(self) -> None:
        self.requests.clear()
        self.script.clear()

    # -- the endpoints ---------------------------------------------------------------------
    async def _record(self, request: Request) -> tuple[Recorded, Response | None]:
        raw = await request.body()
        record = Recorded(method=request.method, path=request.url.path, query=dict(request.query_params),
                          headers=dict(request.headers), raw=raw)
        self.requests.append(record)
        key = request.headers.get("x-api-key")
        if not key or request.headers.get("authorization"):
            return record, self._reject(record, 401, "x-api-key header is required (and no Authorization)")
        if key != self.api_key:
            return record, self._reject(record, 401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return record, self._reject(record, 400, "anthropic-version: header is required")
        if request.method == "POST":
            try:
                record.body = json.loads(raw)
            except ValueError:
                return record, self._reject(record, 400, "There was an error parsing the body as JSON")
        return record, None

    def _reject(self, record: Recorded, status: int, message: str) -> Response:
        record.error = message
        record.answered = status
        return JSONResponse(anthropic_error(status, message), status_code=status)

    def _check_body(self, record: Recorded, count_only: bool) -> Response | None:
        if not self.validate:
            return None
        body = record.body if isinstance(record.body, dict) else {}
        if count_only and "max_tokens" in body:
            return self._reject(record, 400, "max_tokens: Extra inputs are not permitted")
        try:
            validate_messages_request({**body, "max_tokens": 1} if count_only else body)
        except MessagesRequestError as exc:
            return self._reject(record, 400, str(exc))
        return None

    async def _messages(self, request: Request) -> Response:
        record, rejected = await self._record(request)
        rejected = rejected or self._check_body(record, count_only=False)
        if rejected:
            return rejected
        stream = bool(record.body.get("stream"))
        if not self.script and self.responder is not None:
            answer = self.responder(record.body)
            self.push(Reply(events=message_events(answer)) if stream else Reply(json=answer))
        if not self.script:
            return self._reject(record, 500, "anthropic test upstream: no canned reply left")
        response = await self._answer(self.script.popleft(), record, stream)
        record.answered = response.status_code
        return response

    async def _count_tokens(self, request: Request) -> Response:
        record, rejected = await self._record(request)
        rejected = rejected or self._check_body(record, count_only=True)
        if rejected:
            return rejected
        if self.script:
            return await self._answer(self.script.popleft(), record, False)
        record.answered = 200
        return JSONResponse({"input_tokens": self.token_count})

    async def _models(self, request: Request) -> Response:
        record, rejected = await self._record(request)
        if rejected:
            return rejected
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2026-01-01T00:00:00Z"}
                for m in self.models]
        record.answered = 200
        return JSONResponse({"data": data, "has_more": False, "first_id": self.models[0] if self.models else None,
                             "last_id": self.models[-1] if self.models else None})

    async def _answer(self, reply: Reply, record: Recorded, stream: bool) -> Response:
        if reply.delay and reply.events is None:
            await asyncio.sleep(reply.delay)
        if reply.events is not None:
            if not stream:
                return self._reject(record, 500, "anthropic test upstream: SSE reply scripted for a non-stream call")
            return StreamingResponse(self._events(reply), status_code=reply.status, media_type="text/event-stream")
        if reply.body is not None:
            return Response(reply.body, status_code=reply.status, media_type=reply.content_type)
        if stream and reply.status == 200:
            return self._reject(record, 500, "anthropic test upstream: JSON reply scripted for a stream call")
        return JSONResponse(reply.json, status_code=reply.status, headers=reply.headers)

    @staticmethod
    async def _events(reply: Reply) -> AsyncIterator[bytes]:
        for item in reply.events or ():
            if reply.delay:
                await asyncio.sleep(reply.delay)
            yield f"event: {item['type']}\ndata: {json.dumps(item, separators=(',', ':'))}\n\n".encode()
        if reply.abort:
            raise ConnectionAbortedError("anthropic test upstream: stream cut on purpose")
