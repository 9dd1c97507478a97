"""A scripted OTLP/HTTP trace receiver on loopback (what an OpenTelemetry collector does).

``POST /v1/traces`` takes the protobuf body the official exporter sends, decodes it with
opentelemetry-proto's ``ExportTraceServiceRequest`` and keeps every span as a
:class:`ReceivedSpan` (ids as hex, attributes as plain Python values). ``status`` scripts the
answer (e.g. 503 to see the exporter fail), ``gate`` holds every export until it is set (a
slow collector), and ``headers`` keeps each export's request
headers (to check the configured ones arrive).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import AppServer

KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS = {0: "unset", 1: "ok", 2: "error"}


def any_value(v: AnyValue) -> Any:
    """An OTLP AnyValue as a Python value (arrays as lists)."""
    which = v.WhichOneof("value")
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return None if which is None else getattr(v, which)


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str
    status: str
    attributes: dict[str, Any]
    events: list[str]
    resource: dict[str, Any]
    start_ns: int
    end_ns: int


@dataclass
class OtlpReceiver:
    """Keeps the spans of every export request it accepts."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    status: int = 200
    exports: int = 0
    gate: threading.Event | None = None  # when set, each export waits for it (a slow collector)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"])])

    async def _traces(self, request: Request) -> Response:
        raw = await request.body()
        if self.gate is not None:
            await asyncio.to_thread(self.gate.wait, 30)
        with self._lock:
            self.exports += 1
            self.headers.append(dict(request.headers))
        if self.status != 200:
            return Response(b"scripted failure", status_code=self.status)
        if request.headers.get("content-type") != "application/x-protobuf":
            return Response(b"expected application/x-protobuf", status_code=415)
        message = ExportTraceServiceRequest()
        message.ParseFromString(raw)
        spans = list(self._decode(message))
        with self._lock:
            self.spans.extend(spans)
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf")

    @staticmethod
    def _decode(message: ExportTraceServiceRequest) -> Iterator[ReceivedSpan]:
        for rs in message.resource_spans:
            resource = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    yield ReceivedSpan(
                        name=s.name, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(), kind=KINDS[s.kind], status=STATUS[s.status.code],
                        attributes={kv.key: any_value(kv.value) for kv in s.attributes},
                        events=[e.name for e in s.events], resource=resource,
                        start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano)

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 15.0) -> list[ReceivedSpan]:
        """The spans once ``predicate(spans)`` holds (exports arrive in batches, from a thread)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver did not get the expected spans; it has {len(spans)}: "
                                     f"{[(s.name, s.kind) for s in spans]}")
            time.sleep(0.02)

    def by_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]


@contextlib.contextmanager
def otlp_receiver() -> Iterator[tuple[OtlpReceiver, str]]:
    """A receiver on a free loopback port and its base URL (``http://127.0.0.1:PORT``)."""
    receiver = OtlpReceiver()
    server = AppServer(receiver.app()).start()
    try:
        yield receiver, server.url
    finally:
        server.stop()
