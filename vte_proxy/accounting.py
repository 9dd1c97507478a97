"""What happens when a request ends: metrics, token counts, the request log.

:func:`record_usage` is the one hook the proxy calls with the usage of every answer, streamed
or not. :func:`finish` turns a :class:`RequestRecord` into metrics, one log line and an entry
in the live request log that the status page shows.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vte_proxy import metrics

log = logging.getLogger("vte_proxy.access")

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


def record_usage(rec: RequestRecord, usage: dict[str, Any] | None) -> None:
    """The usage hook: count the tokens of one answer against provider, model and key."""
    if usage is None:
        metrics.child(metrics.USAGE_MISSING, rec.provider).inc()
        return
    prompt, completion = usage_tokens(usage)
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


def finish(rec: RequestRecord) -> None:
    """Close the books on a request: metrics, the log line, the live log."""
    rec.duration = time.monotonic() - rec.started
    metrics.child(metrics.REQUESTS, rec.endpoint, rec.model, rec.provider, rec.key, str(rec.status)).inc()
    metrics.child(metrics.DURATION, rec.endpoint, rec.model, rec.provider).observe(rec.duration)
    if rec.ttft is not None:
        metrics.child(metrics.TTFT, rec.model, rec.provider).observe(rec.ttft)
    entry = rec.entry()
    recent.append(entry)
    for notify in tuple(subscribers):
        notify(entry)
    if log.isEnabledFor(logging.INFO):
        log.info("%s %s %s -> %s %d %.1fms", rec.key, rec.endpoint, entry["model"], rec.provider, rec.status,
                 rec.duration * 1000, extra={"request": entry})
