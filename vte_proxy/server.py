"""uvicorn's httptools protocol with the limits a gateway needs against slow or greedy clients.

uvicorn bounds the idle time between requests (keep-alive) but not the time a client may take
to send its request headers, nor their size: a slowloris client could hold connections open
forever. This protocol closes a connection whose headers are not complete within
``header_timeout`` seconds of its first byte (or of the connection), and answers 431 to
headers larger than ``MAX_HEADER_BYTES``. The request body has its own limit and timeout
(``server.max_body_bytes``, ``server.body_timeout``), enforced in :mod:`vte_proxy.http`.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT = 10.0  # seconds, the default of server.header_timeout
MAX_HEADER_BYTES = 64 * 1024

_TOO_LARGE_BODY = b'{"error":{"message":"request headers are too large","type":"invalid_request_error",' \
    b'"code":"headers_too_large"}}'
_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
              b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY))


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol with a header deadline and size cap. The CLI passes
    ``functools.partial(GuardedHttpToolsProtocol, header_timeout=...)`` as uvicorn's ``http``
    (a partial of a module-level class pickles, so ``--workers N`` gets it too)."""

    _header_timer: TimerHandle | None = None
    _header_bytes = 0

    def __init__(self, *args: Any, header_timeout: float = HEADER_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
            self._disarm()
            self.transport.write(_TOO_LARGE)
            self.transport.close()

    def _arm(self) -> None:
        if self._header_timer is None and self.header_timeout > 0:
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
