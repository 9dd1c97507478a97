"""What happens when a request ends: metrics, token counts, the request log.

:class:`Accounting` is built once per process by ``create_app`` and passed to whoever needs
it. The exchange reports each request to it exactly once (:meth:`Accounting.finish`), and
tells it when a request moves to a provider (:meth:`Accounting.dispatched`, the in-flight
gauge). It carries the process's :class:`~vte_proxy.tracing.Tracing` (traces are the other
half of what a request reports), so every exchange, whatever its transport, finds it. It
keeps the live request log the status page shows, its subscribers, and the count
of finished requests the memory watcher reads.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from vte_proxy import metrics
from vte_proxy.record import RequestRecord
from vte_proxy.tracing import Tracing

log = logging.getLogger("vte_proxy.access")
trace = logging.getLogger("vte_proxy.dispatch")

LOG_SIZE = 500

Subscriber = Callable[[dict[str, Any]], None]


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def usage_tokens(usage: dict[str, Any]) -> tuple[int | None, int | None]:
    """(prompt, completion) from chat/completions/embeddings usage or Responses API usage."""
    prompt = _int(usage.get("prompt_tokens"))
    if prompt is None:
        prompt = _int(usage.get("input_tokens"))
    completion = _int(usage.get("completion_tokens"))
    if completion is None:
        completion = _int(usage.get("output_tokens"))
    return prompt, completion


class Accounting:
    """Closes the books on requests: metrics, the log line, the live log."""

    def __init__(self, size: int = LOG_SIZE, tracing: Tracing | None = None) -> None:
        self.tracing = tracing if tracing is not None else Tracing()  # off until a config turns it on
        self.recent: deque[dict[str, Any]] = deque(maxlen=size)
        self.subscribers: set[Subscriber] = set()
        self.finished = 0  # requests finished since start (tells a busy gateway from a quiet one)

    def dispatched(self, rec: RequestRecord, provider: str) -> None:
        """``rec`` is being sent to ``provider`` (again, or to the next route target): it counts
        as in flight there until :meth:`finish`."""
        if rec.provider != provider:
            if rec.provider != "-":
                metrics.child(metrics.IN_FLIGHT, rec.provider).dec()
            metrics.child(metrics.IN_FLIGHT, provider).inc()
            rec.provider = provider
        if trace.isEnabledFor(logging.DEBUG):  # every try, so a route's fall-over can be followed
            trace.debug("%s key=%s model=%s: sending to provider %s", rec.endpoint, rec.key, rec.model, provider)

    @staticmethod
    def routed(route: str, target: str) -> None:
        """A route sent a request to ``target`` (``vte_route_selections_total``)."""
        metrics.child(metrics.ROUTE_SELECTIONS, route, target).inc()

    def finish(self, rec: RequestRecord) -> None:
        """Report a request that has ended, once."""
        self.finished += 1
        rec.duration = time.monotonic() - rec.started
        if rec.status == 0:  # an unexpected exception: the guard middleware answers 500
            rec.status, rec.error = 500, rec.error or "internal_error"
        if rec.provider != "-":
            metrics.child(metrics.IN_FLIGHT, rec.provider).dec()
        self._count(rec)
        entry = rec.entry()
        self.recent.append(entry)
        for notify in tuple(self.subscribers):
            notify(entry)
        if log.isEnabledFor(logging.INFO):
            log.info(RequestLine(entry), extra={"request": entry})

    @staticmethod
    def _count(rec: RequestRecord) -> None:
        metrics.child(metrics.REQUESTS, rec.endpoint, rec.model, rec.provider, rec.key, str(rec.status)).inc()
        metrics.child(metrics.DURATION, rec.endpoint, rec.model, rec.provider).observe(rec.duration)
        if rec.ttft is not None:
            metrics.child(metrics.TTFT, rec.model, rec.provider).observe(rec.ttft)
        if rec.answered:
            _count_usage(rec)


def _count_usage(rec: RequestRecord) -> None:
    """Tokens of the answer against provider, model and key. An answer without usage is
    counted as such; when it was estimated (:mod:`vte_proxy.usage_estimate`), its estimate is
    counted too, and marked in ``vte_usage_estimated_total``."""
    prompt, completion = usage_tokens(rec.usage) if rec.usage is not None else (None, None)
    if rec.estimated:
        metrics.child(metrics.USAGE_MISSING, rec.provider).inc()
        metrics.child(metrics.USAGE_ESTIMATED, rec.provider).inc()
    if prompt is None and completion is None:
        if not rec.estimated:
            metrics.child(metrics.USAGE_MISSING, rec.provider).inc()
        return
    rec.prompt_tokens, rec.completion_tokens = prompt, completion
    if prompt:
        metrics.child(metrics.TOKENS, rec.model, rec.provider, rec.key, "prompt").inc(prompt)
    if completion:
        metrics.child(metrics.TOKENS, rec.model, rec.provider, rec.key, "completion").inc(completion)


def safe_text(value: str) -> str:
    """Client text for a text log line: as is when plain, JSON-quoted when it holds spaces,
    quotes or control characters (no forged lines, no ambiguity)."""
    if value and value.isprintable() and " " not in value and '"' not in value:
        return value
    return json.dumps(value)


class RequestLine:
    """The text of a request's log line, built only if a text formatter asks for it:
    ``200 chat/completions key=team model=up/gpt-4o provider=up duration=12.3ms ttft=4.1ms tokens=7+3``."""

    __slots__ = ("entry",)

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry

    def __str__(self) -> str:
        e = self.entry
        parts = [str(e["status"]), e["endpoint"], f"key={e['key']}", f"model={safe_text(e['model'])}",
                 f"provider={e['provider']}", f"duration={e['duration_ms']}ms"]
        if e["ttft_ms"] is not None:
            parts.append(f"ttft={e['ttft_ms']}ms")
        p, c = e["prompt_tokens"], e["completion_tokens"]
        parts.append("tokens=-" if p is None and c is None else f"tokens={p or 0}+{c or 0}")
        if e["stream"]:
            parts.append("stream")
        if e["error"]:
            parts.append(f"error={safe_text(e['error'])}")
        if "trace_id" in e:
            parts.append(f"trace={e['trace_id']}")
        return " ".join(parts)
