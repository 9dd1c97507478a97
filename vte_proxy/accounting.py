"""What happens when a request ends: metrics, token counts, the request log.

:func:`dispatched` is called when a request is handed to a provider (the in-flight gauge);
:func:`record_usage` is the one hook the proxy calls with the usage of every answer, streamed
or not. :func:`finish` turns a :class:`RequestRecord` into metrics, one log line and an entry
in the live request log that the status page shows.

Nothing here holds a key: a record carries the key's *name*. The requested model is client
text: it goes to the log line (escaped) and the live log, never into a metric label.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vte_proxy import metrics

log = logging.getLogger("vte_proxy.access")
trace = logging.getLogger("vte_proxy.dispatch")

LOG_SIZE = 500


@dataclass(slots=True)
class RequestRecord:
    """One request, filled in as it goes. ``model`` is label-safe (an exposed name or
    ``unknown``); ``requested`` is what the client sent, for the log only."""

    endpoint: str
    started: float
    time: float
    key: str = "-"
    model: str = "unknown"
    requested: str = ""
    provider: str = "-"
    status: int = 0
    stream: bool = False
    ttft: float | None = None
    duration: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    in_flight: str | None = None  # the provider whose in-flight gauge counts this request

    def entry(self) -> dict[str, Any]:
        return {"time": self.time, "key": self.key, "model": self.requested or self.model,
                "provider": self.provider, "endpoint": self.endpoint, "status": self.status,
                "stream": self.stream, "duration_ms": round(self.duration * 1000, 2),
                "ttft_ms": None if self.ttft is None else round(self.ttft * 1000, 2),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "error": self.error}


def new_record(endpoint: str) -> RequestRecord:
    return RequestRecord(endpoint, time.monotonic(), time.time())


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


def dispatched(rec: RequestRecord, provider: str) -> None:
    """The request is being sent to ``provider`` (again, or to the next route target): it
    counts as in flight there until :func:`finish`."""
    if rec.in_flight != provider:
        if rec.in_flight is not None:
            metrics.child(metrics.IN_FLIGHT, rec.in_flight).dec()
        metrics.child(metrics.IN_FLIGHT, provider).inc()
        rec.in_flight = provider
    rec.provider = provider
    if trace.isEnabledFor(logging.DEBUG):  # every try, so a route's fall-over can be followed
        trace.debug("%s key=%s model=%s: sending to provider %s", rec.endpoint, rec.key, rec.model, provider)


def record_usage(rec: RequestRecord, usage: dict[str, Any] | None) -> None:
    """The usage hook: count the tokens of one answer against provider, model and key.
    An answer without usage is counted as such, never guessed."""
    prompt, completion = usage_tokens(usage) if usage is not None else (None, None)
    if prompt is None and completion is None:
        metrics.child(metrics.USAGE_MISSING, rec.provider).inc()
        return
    assert usage is not None
    rec.prompt_tokens, rec.completion_tokens = prompt, completion
    if prompt:
        metrics.child(metrics.TOKENS, rec.model, rec.provider, rec.key, "prompt").inc(prompt)
    if completion:
        metrics.child(metrics.TOKENS, rec.model, rec.provider, rec.key, "completion").inc(completion)
    for sink in usage_sinks:
        sink(rec.provider, rec.model, rec.key, usage)


# Extra consumers of usage (the status page's per-model totals).
usage_sinks: list[Callable[[str, str, str, dict[str, Any]], None]] = []

recent: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
subscribers: set[Callable[[dict[str, Any]], None]] = set()
_finished = 0


def finished_count() -> int:
    """Requests finished since the process started (tells a busy gateway from a quiet one)."""
    return _finished


def finish(rec: RequestRecord) -> None:
    """Close the books on a request: metrics, the log line, the live log."""
    global _finished
    _finished += 1
    rec.duration = time.monotonic() - rec.started
    if rec.status == 0:  # an unexpected exception: the guard middleware answers 500
        rec.status, rec.error = 500, rec.error or "internal_error"
    if rec.in_flight is not None:
        metrics.child(metrics.IN_FLIGHT, rec.in_flight).dec()
        rec.in_flight = None
    metrics.child(metrics.REQUESTS, rec.endpoint, rec.model, rec.provider, rec.key, str(rec.status)).inc()
    metrics.child(metrics.DURATION, rec.endpoint, rec.model, rec.provider).observe(rec.duration)
    if rec.ttft is not None:
        metrics.child(metrics.TTFT, rec.model, rec.provider).observe(rec.ttft)
    entry = rec.entry()
    recent.append(entry)
    for notify in tuple(subscribers):
        notify(entry)
    if log.isEnabledFor(logging.INFO):
        log.info(RequestLine(entry), extra={"request": entry})


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
        return " ".join(parts)
