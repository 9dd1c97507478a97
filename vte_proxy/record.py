"""The record of one request, filled in as it walks down the pipeline.

A :class:`RequestRecord` is plain data: the exchange (:mod:`vte_proxy.exchange`) owns it and
hands it to accounting once, when the request ends. Nothing here holds a key: a record carries
the key's *name*. The requested model is client text: it goes to the log line (escaped) and the
live log, never into a metric label.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class RequestRecord:
    """One request. ``model`` is label-safe (an exposed name or ``unknown``); ``requested`` is
    what the client sent, for the log only."""

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
    answered: bool = False  # an answer came back (its usage, if any, is in ``usage``)
    usage: dict[str, Any] | None = None
    estimated: bool = False  # the upstream reported no usage: ``usage`` is the gateway's estimate
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    trace_id: str | None = None  # the request's trace (when tracing is on): in the log, to join the two

    @classmethod
    def start(cls, endpoint: str) -> RequestRecord:
        """A record whose clock starts now."""
        return cls(endpoint, time.monotonic(), time.time())

    def first_byte(self) -> None:
        """The first bytes of the answer leave now (time to first token, for streams)."""
        if self.ttft is None:
            self.ttft = time.monotonic() - self.started

    def got_usage(self, usage: dict[str, Any] | None) -> None:
        """The answer is complete (or cut) and reported this usage (None: none)."""
        self.answered, self.usage = True, usage

    def failed(self, status: int, code: str | None) -> None:
        self.status, self.error = status, code

    def entry(self) -> dict[str, Any]:
        """The record as one line of the request log."""
        entry: dict[str, Any] = {
            "time": self.time, "key": self.key, "model": self.requested or self.model,
            "provider": self.provider, "endpoint": self.endpoint, "status": self.status,
            "stream": self.stream, "duration_ms": round(self.duration * 1000, 2),
            "ttft_ms": None if self.ttft is None else round(self.ttft * 1000, 2),
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "error": self.error}
        if self.trace_id is not None:
            entry["trace_id"] = self.trace_id
        return entry
