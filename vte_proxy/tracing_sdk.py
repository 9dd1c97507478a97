"""The OpenTelemetry side of :mod:`vte_proxy.tracing`, imported only when tracing is on.

A :class:`Tracer` owns one SDK ``TracerProvider`` with a ``BatchSpanProcessor`` and the
OTLP/HTTP (protobuf) exporter: ending a span appends it to a queue, a background thread
exports batches. A request never waits for the collector: when the queue is full a span is
dropped, and spans whose export failed (after the exporter's own retries) are dropped too;
while either lasts, new requests are not traced at all (:meth:`Tracer.accepting`: but for a
probe every few seconds while the collector fails), so a dead collector costs next to nothing.
All of it is counted in ``vte_trace_spans_dropped_total{reason}``.

The pieces, each in its own module (all of them import OpenTelemetry, so only this one is
imported by :mod:`vte_proxy.tracing`, lazily): :mod:`vte_proxy.tracing_export` (the counting
exporter and processor: drops, collector-down probing), :mod:`vte_proxy.tracing_spans` (the
request and attempt spans), :mod:`vte_proxy.tracing_genai` (the GenAI semantic-convention
attributes read from bodies and streams).

Never recorded: keys (client or upstream), request headers, URLs with credentials. Prompts
and completions only for keys with ``trace_content: true``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from vte_proxy import __version__
from vte_proxy.tracing import TraceSettings, where
from vte_proxy.tracing_export import CountingExporter, CountingProcessor
from vte_proxy.tracing_genai import OPERATIONS
from vte_proxy.tracing_spans import RequestSpan


def build_provider(settings: TraceSettings) -> tuple[TracerProvider, CountingProcessor]:
    """The SDK provider for ``settings``: parent-based ratio sampling, batched OTLP/HTTP export."""
    resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)), resource=resource,
                              shutdown_on_exit=False)  # shut down by the gateway, bounded; never at exit
    exporter = CountingExporter(OTLPSpanExporter(endpoint=settings.endpoint, headers=dict(settings.headers),
                                                 timeout=settings.timeout), where(settings.endpoint))
    batch = BatchSpanProcessor(exporter, max_queue_size=settings.max_queue_size,
                               schedule_delay_millis=settings.schedule_delay * 1000,
                               max_export_batch_size=min(settings.max_batch_size, settings.max_queue_size))
    processor = CountingProcessor(batch, exporter, settings.max_queue_size)
    provider.add_span_processor(processor)
    return provider, processor


class Tracer:
    """One tracer provider and the spans of the requests that started while it was current."""

    def __init__(self, settings: TraceSettings) -> None:
        self.settings = settings
        self.provider, self.processor = build_provider(settings)
        self._tracer = self.provider.get_tracer("vte_proxy", __version__)
        self._propagator = TraceContextTextMapPropagator()
        self.active = 0  # server spans not ended yet
        self.retired = False
        self._stopping: threading.Thread | None = None

    def accepting(self) -> bool:
        """Whether to trace the next request (see :meth:`CountingProcessor.accepting`)."""
        return self.processor.accepting()

    def request(self, method: str, route: str, endpoint: str, headers: Mapping[str, str]) -> RequestSpan:
        """The server span of one request, continuing the client's ``traceparent`` (``headers``:
        the request's headers with lower-case names; only the W3C trace context is read)."""
        parent = self._propagator.extract(headers) if "traceparent" in headers else None
        operation = OPERATIONS.get(endpoint, endpoint)
        span = self._tracer.start_span(f"{method} {route}", parent, SpanKind.SERVER, {
            "http.request.method": method, "http.route": route, "url.path": route,
            "gen_ai.operation.name": operation})
        self.active += 1
        return RequestSpan(self, span, operation)

    def child(self, parent: Span, name: str, attributes: dict[str, AttributeValue]) -> tuple[Span, dict[str, str]]:
        """A client span under ``parent`` and the headers that carry its context upstream."""
        span = self._tracer.start_span(name, set_span_in_context(parent), SpanKind.CLIENT, attributes)
        headers: dict[str, str] = {}
        self._propagator.inject(headers, set_span_in_context(span))
        return span, headers

    def done(self) -> None:
        self.active -= 1
        if self.retired and self.active == 0:
            self._stop_soon()

    def retire(self) -> None:
        """A newer tracer took over: stop once the last request on this one has ended."""
        self.retired = True
        if self.active == 0:
            self._stop_soon()

    def _stop_soon(self) -> threading.Thread:
        # shutdown() joins the export thread and may wait for a slow collector: never on the loop.
        if self._stopping is None:
            self._stopping = threading.Thread(target=self._shutdown, name="vte-trace-shutdown", daemon=True)
            self._stopping.start()
        return self._stopping

    def _shutdown(self) -> None:
        if self.processor.exporter.down:  # a failing collector: drop the queue now instead of retrying it
            self.processor.exporter.shutdown()
        self.provider.shutdown()

    def force_flush(self) -> bool:
        """Export what is queued now (blocking: tests and shutdown only)."""
        return self.provider.force_flush()

    async def aclose(self, grace: float) -> None:
        """Stop exporting, waiting at most ``grace`` seconds for the queue to be sent."""
        await asyncio.to_thread(self._stop_soon().join, grace)
