"""uvicorn's httptools protocol with the limits a gateway needs against slow or greedy clients.

uvicorn bounds the idle time between requests (keep-alive) but not the time a client may take
to send its request headers, nor their size: a slowloris client could hold connections open
forever. This protocol closes a connection whose headers are not complete within
``header_timeout`` seconds of its first byte (or of the connection), and answers 431 to
headers larger than ``MAX_HEADER_BYTES`` (whole lines: what the server has to hold) or more
than ``MAX_HEADERS`` of them. A request the parser rejects gets uvicorn's 400 as an
OpenAI-shaped JSON error. The request body has its own limit and timeout
(``server.max_body_bytes``, ``server.body_timeout``), enforced in :mod:`vte_proxy.http`.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT = 10.0  # seconds, the default of server.header_timeout
MAX_HEADER_BYTES = 64 * 1024
# Browsers and SDKs send 10-30 headers; 65,000 empty ones would be a 1.5 MB list per request.
MAX_HEADERS = 256
# The request line's fixed part (method, spaces, "HTTP/1.1", CRLF) beyond the URL.
_REQUEST_LINE_OVERHEAD = 20

# A scope key this protocol sets for every request (to None): an endpoint that wants to hear at
# once of a client that leaves puts a callable there (vte_proxy.http.HttpSink.watch), called from
# connection_lost while the response is incomplete, instead of a task per request waiting on
# receive() for the disconnect.
ON_DISCONNECT = "vte.on_disconnect"

_TOO_LARGE_BODY = b'{"error":{"message":"request headers are too large","type":"invalid_request_error",' \
    b'"code":"headers_too_large"}}'
_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
              b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY))
_INVALID_BODY = b'{"error":{"message":"invalid HTTP request","type":"invalid_request_error",' \
    b'"code":"invalid_http_request"}}'
_INVALID = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_INVALID_BODY), _INVALID_BODY))


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol with a header deadline and size cap. The CLI passes
    ``functools.partial(GuardedHttpToolsProtocol, header_timeout=...)`` as uvicorn's ``http``
    (a partial of a module-level class pickles, so ``--workers N`` gets it too)."""

    _header_timer: TimerHandle | None = None
    _header_bytes = 0
    _header_count = 0

    def __init__(self, *args: Any, header_timeout: float = HEADER_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            notify: Callable[[], None] | None = cycle.scope.get(ON_DISCONNECT)  # type: ignore[assignment]
            if notify is not None:
                notify()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._header_count = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url) + _REQUEST_LINE_OVERHEAD)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._count(len(name) + len(value) + 4)  # the whole line: ": " and CRLF too
        if self._header_count > MAX_HEADERS:
            self._refuse(_TOO_LARGE)
        if not self.transport.is_closing():
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        if not self.transport.is_closing():  # refused: the request never reaches the app
            self.scope[ON_DISCONNECT] = None  # type: ignore[literal-required]
            super().on_headers_complete()

    def on_response_complete(self) -> None:
        """An answer sent before its request body was complete (a refusal before reading, 408,
        413, a GET with a body) ends the connection: the rest of that body would otherwise keep
        the parser inside the old request, and each byte of it cancels the keep-alive timer, so
        the socket stayed open for good."""
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            self.transport.close()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what its parser rejects, OpenAI-shaped (never text/plain)."""
        self._refuse(_INVALID)

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(_TOO_LARGE)

    def _refuse(self, answer: bytes) -> None:
        if not self.transport.is_closing():
            self._disarm()
            self.transport.write(answer)
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
