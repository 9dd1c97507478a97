"""Logging: readable text for a terminal or one JSON object per line (``VTE_LOG_FORMAT``).

Nothing logged here ever holds a key: request lines carry the key's *name*, and errors carry
the gateway's own redacted messages, never upstream URLs with credentials or headers.
Third-party loggers that print headers, URLs or frames at debug level (HTTP clients, the
WebSocket library) are held at warning whatever ``VTE_LOG_LEVEL`` says.

A request line (logger ``vte_proxy.access``, level info), as text::

    2025-06-01 12:00:00,123 INFO    vte_proxy.access: 200 chat/completions key=team model=up/gpt-4o
    provider=up duration=812.4ms ttft=95.1ms tokens=12+40 stream

and as JSON (one object per line)::

    {"time": "2025-06-01T12:00:00.123Z", "level": "info", "logger": "vte_proxy.access",
     "message": "request", "key": "team", "model": "up/gpt-4o", "provider": "up", ...}
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

# Loggers that would print request headers, URLs with query strings or WebSocket frames.
QUIET = ("httpx", "httpcore", "aiohttp", "websockets", "hpack", "urllib3", "watchfiles", "multipart",
         "python_multipart")


def _printable(message: str) -> str:
    """A message on one line: control characters (client text may hold some) escaped."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


_WS_TRACE = ("< ", "> ", "= ", "! ", "x ", "% ")


def _uvicorn_filter(record: logging.LogRecord) -> bool:
    """uvicorn lends its ``uvicorn.error`` logger to the WebSocket library, which traces the
    handshake (every header, Authorization included) and every frame at debug: dropped.
    uvicorn itself logs WebSocket handshakes with the query string at info, and a client may
    put its key there (``?api_key=``): the path is kept, the query is not."""
    msg = record.msg
    if not isinstance(msg, str):
        return True
    if record.levelno <= logging.DEBUG and msg[:2] in _WS_TRACE:
        return False
    args = record.args
    if msg.startswith('%s - "WebSocket %s"') and isinstance(args, tuple) and len(args) >= 2 \
            and isinstance(args[1], str) and "?" in args[1]:
        record.args = (args[0], args[1].split("?", 1)[0] + "?[redacted]", *args[2:])
    return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _printable(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        request = getattr(record, "request", None)
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": "request" if isinstance(request, dict) else record.getMessage(),
        }
        if isinstance(request, dict):
            out.update({k: v for k, v in request.items() if k != "time"})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    error_log = logging.getLogger("uvicorn.error")
    if _uvicorn_filter not in error_log.filters:
        error_log.addFilter(_uvicorn_filter)
    # uvicorn's access log would duplicate our request line (and log query strings).
    logging.getLogger("uvicorn.access").disabled = True
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # The OpenTelemetry SDK warns on every retry and every full queue: drops are counted in
    # vte_trace_spans_dropped_total and vte_proxy.tracing warns once a minute; its errors stay.
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)
