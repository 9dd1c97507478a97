"""The OpenTelemetry side of :mod:`vte_proxy.tracing`, imported only when tracing is on.

A :class:`Tracer` owns one SDK ``TracerProvider`` with a ``BatchSpanProcessor`` and the
OTLP/HTTP (protobuf) exporter: ending a span appends it to a queue, a background thread
exports batches. A request never waits for the collector: when the queue is full a span is
dropped, and spans whose export failed (after the exporter's own retries) are dropped too;
while either lasts, new requests are not traced at all (:meth:`Tracer.accepting`: but for a
probe every few seconds while the collector fails), so a dead collector costs next to nothing.
All of it is counted in ``vte_trace_spans_dropped_total{reason}``.

Per request: one server span (:class:`RequestSpan`, continuing the client's W3C
``traceparent``/``tracestate``) and one client span per upstream attempt
(:class:`AttemptSpan`, whose context is what the upstream receives in ``traceparent``), with
the GenAI semantic-convention attributes. Parents are passed explicitly: no context variable
is set, so nothing leaks between requests that share a task.

Never recorded: keys (client or upstream), request headers, URLs with credentials. Prompts
and completions only for keys with ``trace_content: true``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import orjson
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from vte_proxy import __version__, metrics
from vte_proxy.providers.base import Answer, EventBatches, JsonAnswer
from vte_proxy.sse import data_of
from vte_proxy.tracing import TraceSettings, where
from vte_proxy.tracing_content import StreamContent, input_messages, output_messages

log = logging.getLogger("vte_proxy.tracing")

# gen_ai.operation.name by gateway endpoint (semantic-convention values where one exists).
OPERATIONS = {"chat/completions": "chat", "chat/completions/ws": "chat", "completions": "text_completion",
              "embeddings": "embeddings", "responses": "chat", "messages": "chat",
              "messages/count_tokens": "count_tokens"}
# gen_ai.provider.name by provider type (the conventions' well-known values where one exists).
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "vertex-express": "gcp.vertex_ai",
                  "echo": "vte_proxy.echo"}
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
        self._next_probe = 0.0

    def accepting(self) -> bool:
        """Whether to trace the next request. While the collector fails, or the export queue is
        full, spans would only be made to be dropped: a request is then not traced at all
        (counted as one dropped span, reason ``collector_down`` or ``queue_full``), so a dead or
        slow collector costs the requests next to nothing. While it fails, one probe request
        every PROBE_EVERY seconds is traced: its export tells when the collector is back."""
        processor = self.processor
        exporter = processor.exporter
        if not exporter.down:
            if processor.queued - exporter.taken < processor.capacity:
                return True
            metrics.child(metrics.TRACE_SPANS_DROPPED, "queue_full").inc()
            return False
        now = time.monotonic()
        if now >= self._next_probe and now >= exporter.failed_at + PROBE_EVERY:
            self._next_probe = now + PROBE_EVERY
            return True
        metrics.child(metrics.TRACE_SPANS_DROPPED, "collector_down").inc()
        return False

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


@functools.lru_cache(maxsize=256)
def server_of(base_url: str) -> tuple[str, int]:
    """server.address and server.port of an upstream's base URL (never its path or credentials)."""
    parts = urlsplit(base_url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def request_attributes(body: dict[str, Any]) -> dict[str, AttributeValue]:
    """gen_ai.request.* from a client body (OpenAI chat/completions/responses or Anthropic)."""
    out: dict[str, AttributeValue] = {}
    for field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if (n := _count(body.get(field))) is not None:
            out["gen_ai.request.max_tokens"] = n
            break
    for field, name in (("temperature", "gen_ai.request.temperature"), ("top_p", "gen_ai.request.top_p")):
        if (x := _number(body.get(field))) is not None:
            out[name] = float(x)
    out["gen_ai.request.stream"] = body.get("stream") is True
    return out


def usage_counts(usage: Any) -> tuple[int | None, int | None]:
    """(input, output) tokens from an OpenAI (chat or Responses) or Anthropic usage object."""
    if not isinstance(usage, dict):
        return None, None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    return (prompt if prompt is not None else _count(usage.get("input_tokens")),
            completion if completion is not None else _count(usage.get("output_tokens")))


def finish_reasons(body: dict[str, Any]) -> list[str]:
    """Finish reasons of an answer: choices[].finish_reason, or Anthropic's stop_reason."""
    choices = body.get("choices")
    reasons = [c["finish_reason"] for c in choices if isinstance(c, dict)
               and isinstance(c.get("finish_reason"), str)] if isinstance(choices, list) else []
    if not reasons and isinstance(body.get("stop_reason"), str):
        reasons.append(body["stop_reason"])
    return reasons


class RequestSpan:
    """The server span of one request; ended exactly once by :meth:`end`."""

    __slots__ = ("_answering", "_attempts", "_ended", "_has_usage", "_last", "_output", "_tracer", "capture",
                 "operation", "span", "trace_id")

    def __init__(self, tracer: Tracer, span: Span, operation: str) -> None:
        self._tracer = tracer
        self.span = span
        self.operation = operation
        self.trace_id = format(span.get_span_context().trace_id, "032x")
        self.capture = False  # the key opted in to content capture (and the span records)
        self._attempts = 0
        self._answering: AttemptSpan | None = None
        self._last: AttemptSpan | None = None
        self._has_usage = False
        self._output: StreamContent | None = None
        self._ended = False

    @property
    def recording(self) -> bool:
        return self.span.is_recording()

    def key(self, name: str, trace_content: bool = False) -> None:
        """The client key (its name from the config) and whether it opted in to content capture."""
        self.span.set_attribute("vte.key", name)
        self.capture = trace_content and self.span.is_recording()

    def model(self, body: dict[str, Any], exposed: str, route: str | None = None) -> None:
        """The resolved request: exposed model name, the route if it is one, request parameters."""
        if not self.span.is_recording():
            return
        attributes = request_attributes(body)
        attributes["gen_ai.request.model"] = exposed
        if route:
            attributes["vte.route"] = route
        self.span.set_attributes(attributes)
        if self.capture:
            self._capture(body)

    def _capture(self, body: dict[str, Any]) -> None:
        try:
            messages = input_messages(body)
        except Exception:  # client JSON of any shape: capture is best effort, never a failure
            log.debug("tracing: could not read the input messages", exc_info=True)
            return
        if messages:
            self.span.set_attribute("gen_ai.input.messages", orjson.dumps(messages).decode())

    def attempt(self, provider: str, provider_type: str, upstream_model: str, *, target: str = "",
                stream: bool = False, base_url: str | None = None,
                upstream_key: str | None = None) -> AttemptSpan:
        """A client span for one try at one upstream (retries and fall-overs each get one)."""
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": self.operation, "gen_ai.provider.name": PROVIDER_NAMES.get(provider_type,
                                                                                                provider_type),
            "gen_ai.request.model": upstream_model, "gen_ai.request.stream": stream, "vte.provider": provider}
        if target:
            attributes["vte.target"] = target
        if base_url:
            attributes["server.address"], attributes["server.port"] = server_of(base_url)
        if upstream_key:
            attributes["vte.upstream_key"] = upstream_key
        name = f"{self.operation} {upstream_model}"
        span, headers = self.child(name, attributes)
        self._last = AttemptSpan(self, span, headers, provider, provider_type, name, attributes)
        return self._last

    def child(self, name: str, attributes: dict[str, AttributeValue]) -> tuple[Span, dict[str, str]]:
        """A new attempt span (numbered over the request) and its upstream headers."""
        self._attempts += 1
        return self._tracer.child(self.span, name, {**attributes, "vte.attempt": self._attempts})

    def answered_by(self, attempt: AttemptSpan) -> None:
        self._answering = attempt
        self.span.set_attribute("gen_ai.provider.name", PROVIDER_NAMES.get(attempt.provider_type,
                                                                           attempt.provider_type))
        self.span.set_attribute("vte.provider", attempt.provider)

    def first_token(self, seconds: float, ago: float = 0.0) -> None:
        """Time from the request to the first bytes of the answer; the ``first_token`` event is
        placed when they left (``ago`` seconds before now)."""
        self.span.set_attribute("vte.time_to_first_token", seconds)
        self.span.add_event("first_token", timestamp=time.time_ns() - int(ago * 1e9))

    def response(self, body: dict[str, Any]) -> None:
        """An upstream answer as JSON (before the gateway renamed its model): the response
        model and id, finish reasons, usage, and the output when content is captured."""
        if not self.span.is_recording():
            return
        model, rid = body.get("model"), body.get("id")
        self.result(model=model if isinstance(model, str) else None, response_id=rid if isinstance(rid, str) else None,
                    reasons=finish_reasons(body), usage=body.get("usage"))
        if self.capture:
            try:
                out = output_messages(body)
            except Exception:
                log.debug("tracing: could not read the output messages", exc_info=True)
                return
            if out:
                self.span.set_attribute("gen_ai.output.messages", orjson.dumps(out).decode())

    def result(self, model: str | None = None, response_id: str | None = None, reasons: Sequence[str] = (),
               usage: Any = None) -> None:
        """Response facts known piecemeal (streams): each given one is set on the server span
        and on the attempt that answered."""
        attributes: dict[str, AttributeValue] = {}
        if model:
            attributes["gen_ai.response.model"] = model
        if response_id:
            attributes["gen_ai.response.id"] = response_id
        if reasons:
            attributes["gen_ai.response.finish_reasons"] = list(reasons)
        prompt, completion = usage_counts(usage)
        if prompt is not None:
            attributes["gen_ai.usage.input_tokens"] = prompt
        if completion is not None:
            attributes["gen_ai.usage.output_tokens"] = completion
        self._has_usage = self._has_usage or prompt is not None or completion is not None
        if attributes:
            self.span.set_attributes(attributes)
            if self._answering is not None:
                self._answering.span.set_attributes(attributes)

    def usage(self, usage: dict[str, Any], estimated: bool = False) -> None:
        """The usage accounting got at the end (streams; a JSON answer already brought its
        own). ``estimated``: the upstream reported none, the gateway counted (``vte.usage_estimated``)."""
        if not self._has_usage:
            self.result(usage=usage)
            if estimated:
                self.span.set_attribute("vte.usage_estimated", True)

    def observe(self, answer: Answer) -> Answer:
        """The upstream's answer, watched for the response facts before shaping renames its
        model: read now from a JSON answer, event by event from a stream (only the events that
        carry them are decoded, every event only when content is captured)."""
        if not self.span.is_recording():
            return answer
        if isinstance(answer, JsonAnswer):
            try:
                self.response(answer.body)
            except Exception:  # an answer of an odd shape: tracing never fails a request
                log.debug("tracing: could not read the answer", exc_info=True)
            return answer
        return replace(answer, events=self._watch(answer.events))

    async def _watch(self, events: EventBatches) -> EventBatches:
        facts = StreamFacts(self.stream_content())
        try:
            async for batch in events:
                for ev in batch:
                    facts.see(ev)
                if facts.changed:  # set as they come: a consumer may stop reading at [DONE]
                    facts.changed = False
                    self.result(model=facts.model, response_id=facts.response_id, reasons=facts.reasons)
                yield batch
        finally:
            await events.aclose()

    def stream_content(self) -> StreamContent | None:
        """A collector of streamed output for content capture; None when not capturing."""
        if self.capture and self._output is None:
            self._output = StreamContent()
        return self._output

    def end(self, status: int, error: str | None = None) -> None:
        """End the request (and the attempt that answered it) with its HTTP status."""
        if self._ended:
            return
        self._ended = True
        try:
            self._finish(status, error)
        except Exception:  # the answer is out: a tracing fault is logged, never the request's
            log.exception("tracing: ending the span of a request failed")
        finally:
            self._tracer.done()

    def _finish(self, status: int, error: str | None) -> None:
        span = self.span
        if self._output is not None and span.is_recording():
            out = self._output.messages()
            if out:
                span.set_attribute("gen_ai.output.messages", orjson.dumps(out).decode())
        span.set_attribute("http.response.status_code", status)
        if status >= 400 or error:
            span.set_attribute("error.type", error or str(status))
        if status >= 500:  # server spans: only 5xx is the server's error (HTTP conventions)
            span.set_status(Status(StatusCode.ERROR, error or str(status)))
        if self._last is not None:  # the attempt that answered, or one cut short (cancelled, refused)
            answered = self._last is self._answering
            self._last.end(status, (error or str(status)) if status >= 400 or not answered else None)
        span.end()


class AttemptSpan:
    """One try at one upstream. ``headers`` go to that upstream (``traceparent``, and
    ``tracestate`` when the trace has one).

    With an upstream key pool, one try may send the request several times (another key after
    a 429, 401 or 403): :meth:`key` and :meth:`key_failed` (the :class:`~vte_proxy.tracing.KeyTries`
    the upstream finds in :data:`~vte_proxy.tracing.KEY_TRIES`) make each key's request a span of
    its own, this object then standing for the latest."""

    __slots__ = ("_attributes", "_ended", "_name", "_request", "headers", "provider", "provider_type", "span")

    def __init__(self, request: RequestSpan, span: Span, headers: dict[str, str], provider: str,
                 provider_type: str, name: str = "", attributes: dict[str, AttributeValue] | None = None) -> None:
        self._request = request
        self.span = span
        self.headers = headers
        self.provider = provider
        self.provider_type = provider_type
        self._name = name
        self._attributes = attributes or {}
        self._ended = False

    def key(self, name: str, headers: Mapping[str, str]) -> Mapping[str, str]:
        """The key pool sends this try with upstream key ``name`` (its name from the config):
        noted on the span; after a failed key, a new span whose trace context the returned
        headers carry."""
        if self._ended:
            self.span, self.headers = self._request.child(self._name, self._attributes)
            self._ended = False
            headers = {**headers, **self.headers}
        self.span.set_attribute("vte.upstream_key", name)
        return headers

    def key_failed(self, status: int) -> None:
        """The last key was refused (429, 401, 403): its span ends; the pool tries another."""
        self.failed(status, "status")

    def answered(self, status: int = 200) -> None:
        """The upstream answered: this attempt carries the answer, and ends with the request."""
        self.span.set_attribute("http.response.status_code", status)
        self._request.answered_by(self)

    def failed(self, status: int, reason: str) -> None:
        """The upstream failed before its first byte (a retry or fall-over may follow)."""
        if status:
            self.span.set_attribute("http.response.status_code", status)
        self.end(status or 502, reason)

    def end(self, status: int, error: str | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        if error:
            self.span.set_attribute("error.type", error)
            self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()


# Events worth decoding for their facts once the model is known: those with a finish.
_FINISH = (b'"finish_reason":"', b'"finish_reason": "', b'"stop_reason":"', b'"stop_reason": "',
           b'"response.completed"', b'"response.incomplete"')


class StreamFacts:
    """The response model, id and finish reasons of a stream (OpenAI chat or completions
    chunks, Responses API events, Anthropic Messages events), read from the few events that
    carry them; with a :class:`StreamContent`, every event feeds it."""

    __slots__ = ("changed", "content", "model", "reasons", "response_id")

    def __init__(self, content: StreamContent | None) -> None:
        self.content = content
        self.changed = False  # a model, id or finish reason was learned since the last look
        self.model: str | None = None
        self.response_id: str | None = None
        self.reasons: list[str] = []

    def see(self, ev: bytes) -> None:
        if self.content is None and self.model is not None and not any(m in ev for m in _FINISH):
            return
        payload = data_of(ev)
        if payload is None or payload == b"[DONE]":
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if isinstance(obj, dict):
            try:
                self._read(obj)
            except (AttributeError, TypeError, ValueError):  # an upstream event of an odd shape: not ours to fail
                log.debug("tracing: could not read a stream event", exc_info=True)

    def _read(self, obj: dict[str, Any]) -> None:
        inner = obj.get("response") or obj.get("message")
        head = inner if isinstance(inner, dict) else obj
        if self.model is None and isinstance(head.get("model"), str):
            self.model = head["model"]
            self.response_id = head["id"] if isinstance(head.get("id"), str) else None
            self.changed = True
        known = len(self.reasons)
        self._reasons(obj, head)
        self.changed = self.changed or len(self.reasons) > known
        if self.content is not None:
            self.content.add(obj)

    def _reasons(self, obj: dict[str, Any], head: dict[str, Any]) -> None:
        self.reasons += finish_reasons(obj)
        delta = obj.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):  # Anthropic message_delta
            self.reasons.append(delta["stop_reason"])
        if head.get("status") == "incomplete" and isinstance(head.get("incomplete_details"), dict):
            reason = head["incomplete_details"].get("reason")  # Responses API
            if isinstance(reason, str):
                self.reasons.append(reason)
