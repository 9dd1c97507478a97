"""The spans of one request, for :mod:`vte_proxy.tracing_sdk`.

One server span (:class:`RequestSpan`, continuing the client's W3C ``traceparent``/
``tracestate``) and one client span per upstream attempt (:class:`AttemptSpan`, whose context
is what the upstream receives in ``traceparent``), with the GenAI semantic-convention
attributes (:mod:`vte_proxy.tracing_genai`). Parents are passed explicitly: no context
variable is set, so nothing leaks between requests that share a task.

Never recorded: keys (client or upstream), request headers, URLs with credentials. Prompts
and completions only for keys with ``trace_content: true``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from vte_proxy.providers.base import Answer, EventBatches, JsonAnswer
from vte_proxy.tracing_content import StreamContent, input_messages, output_messages
from vte_proxy.tracing_genai import (
    PROVIDER_NAMES,
    StreamFacts,
    finish_reasons,
    request_attributes,
    server_of,
    usage_counts,
)

if TYPE_CHECKING:
    from vte_proxy.tracing_sdk import Tracer

log = logging.getLogger("vte_proxy.tracing")


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
