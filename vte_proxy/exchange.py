"""The exchange: one proxied request's lifecycle, shared by every transport.

A transport (:mod:`vte_proxy.http`, :mod:`vte_proxy.websocket`) only frames: it builds an
:class:`Exchange` and a :class:`Sink` and calls :meth:`Exchange.run`. The exchange

- pins the gateway state once (the same one the middleware pinned for this request) and holds
  its provider-set lease to the end, so a reload never changes a request half-way;
- owns the :class:`~vte_proxy.record.RequestRecord` and its clock;
- is the error boundary: a :class:`~vte_proxy.errors.GatewayError` raised anywhere below
  becomes the dialect's JSON error before the first byte, or its SSE error event after it
  (:func:`render_error` is the one function that writes an error answer);
- reports the request to accounting exactly once, when it ends;
- when tracing is on, opens the request's server span (continuing the client's
  ``traceparent``) and ends it once, with the request, after accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from starlette.types import Send

from vte_proxy import error_replies, usage_estimate
from vte_proxy.accounting import Accounting
from vte_proxy.auth import ClientKey
from vte_proxy.config import ErrorReply
from vte_proxy.dialect import Dialect
from vte_proxy.errors import GatewayError
from vte_proxy.limits import Ticket, Usage
from vte_proxy.pipeline import Request, dispatch
from vte_proxy.record import RequestRecord
from vte_proxy.shaping import JsonReply, Reply, StreamReply
from vte_proxy.state import GatewayState
from vte_proxy.usage_estimate import KEEP_BYTES

if TYPE_CHECKING:  # the SDK side of tracing is imported only when tracing is on
    from vte_proxy.tracing_sdk import Tracer
    from vte_proxy.tracing_spans import RequestSpan

log = logging.getLogger("vte_proxy.app")

JSON = (b"content-type", b"application/json")
# Endpoints whose answers are text a usage estimate can count (embeddings report their own).
ESTIMATED = frozenset({"chat/completions", "completions", "responses", "messages"})


class Sink(Protocol):
    """How a transport writes an answer: one JSON message, or a stream of SSE event batches."""

    started: bool  # the first byte of an answer has been sent
    gone: bool     # the client left (its request's task was cancelled for that)

    async def json(self, status: int, body: bytes, headers: Mapping[str, str]) -> None: ...

    async def open_stream(self, headers: Mapping[str, str]) -> None: ...

    async def events(self, batch: list[bytes]) -> None: ...

    async def end_stream(self) -> None: ...


# Answers after which the connection is closed (uvicorn honours the header): the client's body
# was too slow or too large, so what is left of it must not be read as a next request.
CLOSE_AFTER = (408, 413)


async def send_json(send: Send, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
    """A complete JSON response on an ASGI ``send``."""
    raw = [JSON, (b"content-length", str(len(body)).encode())]
    if headers:
        raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    if status in CLOSE_AFTER:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def render_error(send: Send, err: GatewayError, dialect: Dialect, replies: Sequence[ErrorReply] = ()) -> None:
    """The one place an error becomes an HTTP answer (also for the middleware's refusals);
    ``replies``: the config's ``error_replies``."""
    err = error_replies.apply(replies, err)
    await send_json(send, err.status, dialect.error_body(err), err.headers)


class Exchange:
    """One proxied request from its first byte in to its last byte out."""

    __slots__ = ("_kept", "_kept_bytes", "_req", "_sent_bytes", "accounting", "dialect", "record", "span", "state",
                 "ticket")

    def __init__(self, state: GatewayState, accounting: Accounting, endpoint: str, dialect: Dialect) -> None:
        self.state = state
        self.accounting = accounting
        self.dialect = dialect
        self.record = RequestRecord.start(endpoint)
        self.ticket: Ticket | None = None
        self.span: RequestSpan | None = None  # the server span, while tracing is on
        # For a usage estimate when the upstream reports none: the request, and the first
        # KEEP_BYTES of a streamed answer.
        self._req: Request | None = None
        self._kept: list[bytes] = []
        self._kept_bytes = self._sent_bytes = 0

    def dispatched(self, provider: str) -> None:
        self.accounting.dispatched(self.record, provider)

    def admitted(self, ticket: Ticket) -> None:
        self.ticket = ticket

    def routed(self, route: str, target: str) -> None:
        self.accounting.routed(route, target)

    def authenticate(self, presented: bytes | None) -> ClientKey:
        key = self.state.keys.authenticate(presented)
        if key is None:
            raise GatewayError(401, "missing or invalid API key", "invalid_api_key")
        self.record.key = key.name
        if self.span is not None:
            self.span.key(key.name, key.trace_content)
        return key

    async def run(self, sink: Sink, presented: bytes | None, read: Callable[[], Awaitable[bytes]],
                  headers: dict[str, str], stream_reply: bool = False) -> None:
        """Answer one request on ``sink``: authenticate, read, dispatch, send; never raises a
        GatewayError (it is the answer)."""
        reply: Reply | None = None
        self.state.providers.acquire()
        tracer = self.accounting.tracing.current
        if tracer is not None and tracer.accepting():
            self._trace(tracer, headers)
        try:
            key = self.authenticate(presented)
            raw = await read()
            request = self._request(key, self.dialect.parse(raw), headers, stream_reply)
            request.size = len(raw)
            self._req = request
            reply = await dispatch(self.state, request, self)
            await self._send(sink, reply)
        except GatewayError as err:
            await self._fail(sink, err)
        except asyncio.CancelledError:
            await self._cancelled(sink)
            raise
        except Exception:  # a bug below: the client still gets an answer (or an SSE error event)
            log.exception("unexpected error answering %s", self.record.endpoint)
            await self._fail(sink, GatewayError(500, "internal error", "internal_error"))
        finally:
            await self._end(reply)

    def _trace(self, tracer: Tracer, headers: dict[str, str]) -> None:
        endpoint = self.record.endpoint
        self.span = tracer.request("POST", "/v1/" + endpoint, endpoint, headers)
        self.record.trace_id = self.span.trace_id

    def _request(self, key: ClientKey, body: dict[str, object], headers: dict[str, str],
                 stream_reply: bool) -> Request:
        endpoint = self.record.endpoint
        client_stream = stream_reply or (body.get("stream") is True and endpoint != "embeddings")
        self.record.stream = client_stream
        return Request(endpoint, body, key, client_stream, headers, self.dialect.name, span=self.span)

    async def _send(self, sink: Sink, reply: Reply) -> None:
        if isinstance(reply, JsonReply):
            self.record.status = reply.status
            await sink.json(reply.status, reply.body, reply.headers)
            return
        self.record.status = 200
        await sink.open_stream(reply.headers)
        record = self.record
        async for batch in reply.events:
            if record.ttft is None:
                record.first_byte()
            self._keep(batch)
            await sink.events(batch)
        await sink.end_stream()

    def _keep(self, batch: list[bytes]) -> None:
        size = len(batch[0]) if len(batch) == 1 else sum(map(len, batch))
        self._sent_bytes += size
        if self._kept_bytes < KEEP_BYTES:
            self._kept += batch
            self._kept_bytes += size

    def _usage(self, reply: Reply) -> dict[str, Any] | None:
        """The answer's usage; estimated (and marked so) when the upstream reported none."""
        usage = reply.usage() if isinstance(reply, StreamReply) else reply.usage
        request = self._req
        if usage is not None or request is None or self.record.endpoint not in ESTIMATED:
            return usage
        self.record.estimated = True
        body = request.sent or request.body  # what the upstream got (a system prompt counts)
        if isinstance(reply, JsonReply):
            return usage_estimate.from_json(body, reply.body)
        return usage_estimate.from_events(body, self._kept, self._kept_bytes, self._sent_bytes)

    async def _fail(self, sink: Sink, err: GatewayError) -> None:
        self.record.failed(err.status, err.code)
        err = error_replies.apply(self.state.config.error_replies, err)  # only the message changes
        if not sink.started:
            await sink.json(err.status, self.dialect.error_body(err), err.headers)
            return
        await sink.events([self.dialect.error_event(err)])
        await sink.end_stream()

    async def _cancelled(self, sink: Sink) -> None:
        """The request's task was cancelled: the client left (499 if it had no answer yet), or
        the server cut it (``shutdown_grace`` ran out): then the client gets an error, and an
        SSE error event if its stream had begun, and the request counts as a failure."""
        if sink.gone:
            if not sink.started:
                self.record.failed(499, "client_disconnected")
            return
        err = GatewayError(503, "the gateway stopped before the answer was complete", "shutdown")
        with contextlib.suppress(Exception):  # the connection may be gone too
            await self._fail(sink, err)
        self.record.failed(err.status, err.code)

    async def _end(self, reply: Reply | None) -> None:
        try:
            if isinstance(reply, StreamReply):
                await reply.events.aclose()
                await reply.close()
            if reply is not None:
                self.record.got_usage(self._usage(reply))
        finally:
            self.state.providers.release()
            await self._settle()
            try:
                self.accounting.finish(self.record)
            finally:
                if self.span is not None:
                    self._end_span(self.span)

    async def _settle(self) -> None:
        """Give the limits the real usage: an answer's own, its reservation when it reported
        none (a stream the client left early), nothing when no answer came (all refunded)."""
        ticket, rec = self.ticket, self.record
        if ticket is None:
            return
        if rec.usage is not None:
            await ticket.settle(Usage.from_wire(rec.usage))
        else:
            await ticket.settle(ticket.estimated_usage() if rec.answered else None)

    def _end_span(self, span: RequestSpan) -> None:
        """The server span ends with the request: status, usage, time to first token."""
        rec = self.record
        if rec.ttft is not None:
            span.first_token(rec.ttft, ago=time.monotonic() - rec.started - rec.ttft)
        if rec.usage is not None:
            span.usage(rec.usage, estimated=rec.estimated)
        span.end(rec.status, rec.error)
