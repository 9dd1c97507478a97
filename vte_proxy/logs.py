"""Logging: readable text for a terminal or one JSON object per line (``VTE_LOG_FORMAT``).

Nothing logged here ever holds a key: request lines carry the key's *name*, and errors carry
the gateway's own redacted messages, never upstream URLs with credentials or headers.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = getattr(record, "request", None)
        if isinstance(request, dict):
            out.update({k: v for k, v in request.items() if k != "time"})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # uvicorn's access log would duplicate our request line (and log query strings).
    logging.getLogger("uvicorn.access").disabled = True
    # Third-party clients log URLs and headers at debug; keep them quiet whatever the level.
    for name in ("httpx", "httpcore", "aiohttp", "watchfiles"):
        logging.getLogger(name).setLevel(logging.WARNING)
