"""Span export for :mod:`vte_proxy.tracing_sdk`: counting what is exported and dropped.

:class:`CountingExporter` wraps the OTLP exporter, counting exported and failed spans and
noting when the collector is down; :class:`CountingProcessor` wraps the SDK's
``BatchSpanProcessor``, dropping (and counting) new spans when its queue is full, and decides
whether to trace the next request at all (:meth:`CountingProcessor.accepting`: not while the
queue is full or the collector fails, but for a probe every few seconds). All of it is counted
in ``vte_trace_spans_dropped_total{reason}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from vte_proxy import metrics

log = logging.getLogger("vte_proxy.tracing")

# A warning about failing exports at most this often (the counter has every drop).
WARN_EVERY = 60.0
# While the collector fails, one request in this many seconds is traced (a probe whose export
# tells when the collector is back); the others are not traced at all.
PROBE_EVERY = 5.0


class CountingExporter(SpanExporter):
    """The OTLP exporter, counting what it exported and what it had to drop. ``down`` tells
    whether the last export failed (written by the export thread, read by the event loop)."""

    def __init__(self, inner: SpanExporter, endpoint: str) -> None:
        self.inner = inner
        self.endpoint = endpoint  # as logs show it: scheme, host and port (tracing.where)
        self.taken = 0  # spans handed to export (written by the export thread only)
        self.down = False
        self.failed_at = 0.0  # monotonic time of the last failed export
        self.closed = False
        self._warned = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        n = len(spans)
        self.taken += n
        try:
            result = self.inner.export(spans)
        except Exception:  # the SDK logs it; count it like any failed export
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            metrics.TRACE_SPANS_EXPORTED.inc(n)
            if self.down:
                log.warning("tracing: the collector at %s accepts spans again", self.endpoint)
        else:
            metrics.child(metrics.TRACE_SPANS_DROPPED, "export_failed").inc(n)
            self._warn(n)
        if result is not SpanExportResult.SUCCESS:
            self.failed_at = time.monotonic()
        self.down = result is not SpanExportResult.SUCCESS
        return result

    def _warn(self, n: int) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning("tracing: exporting %d spans to %s failed; they are dropped, and until the collector "
                        "answers again only one request in %gs is traced (counted in "
                        "vte_trace_spans_dropped_total)", n, self.endpoint, PROBE_EVERY)

    def shutdown(self) -> None:
        if not self.closed:
            self.closed = True
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingProcessor(SpanProcessor):
    """A ``BatchSpanProcessor`` whose full queue drops new spans and counts them (the SDK's
    would drop the oldest, silently). ``queued`` is written by the event loop only, ``taken``
    by the export thread only: their difference bounds the queue without a lock."""

    def __init__(self, inner: BatchSpanProcessor, exporter: CountingExporter, capacity: int) -> None:
        self.inner = inner
        self.exporter = exporter
        self.capacity = capacity
        self.queued = 0
        self.closed = False
        self._next_probe = 0.0

    def accepting(self) -> bool:
        """Whether to trace the next request. While the collector fails, or the export queue is
        full, spans would only be made to be dropped: a request is then not traced at all
        (counted as one dropped span, reason ``collector_down`` or ``queue_full``), so a dead or
        slow collector costs the requests next to nothing. While it fails, one probe request
        every PROBE_EVERY seconds is traced: its export tells when the collector is back."""
        exporter = self.exporter
        if not exporter.down:
            if self.queued - exporter.taken < self.capacity:
                return True
            metrics.child(metrics.TRACE_SPANS_DROPPED, "queue_full").inc()
            return False
        now = time.monotonic()
        if now >= self._next_probe and now >= exporter.failed_at + PROBE_EVERY:
            self._next_probe = now + PROBE_EVERY
            return True
        metrics.child(metrics.TRACE_SPANS_DROPPED, "collector_down").inc()
        return False

    def on_start(self, span: SdkSpan, parent_context: Any = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if self.closed:
            metrics.child(metrics.TRACE_SPANS_DROPPED, "shutdown").inc()
        elif self.queued - self.exporter.taken >= self.capacity:
            metrics.child(metrics.TRACE_SPANS_DROPPED, "queue_full").inc()
        else:
            self.queued += 1
            self.inner.on_end(span)

    def shutdown(self) -> None:
        self.closed = True
        self.inner.shutdown()  # type: ignore[no-untyped-call]
        left = self.queued - self.exporter.taken
        if left > 0:  # still queued when the export thread gave up
            metrics.child(metrics.TRACE_SPANS_DROPPED, "shutdown").inc(left)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
