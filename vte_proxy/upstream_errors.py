"""The maps from upstream failures to the gateway's errors, and what of an upstream answer a
client may see.

:func:`transport_error` (an aiohttp/asyncio/OS failure), :func:`error_from_response` (a non-2xx
answer), :func:`parse_json_object` (a body that is not a JSON object) and :func:`pool_exhausted`
all make an :class:`~vte_proxy.errors.UpstreamError` whose message never holds a URL, a header
or a key; :func:`passed_headers` picks the answer headers passed back (a valid Retry-After too).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from vte_proxy.errors import UpstreamError
from vte_proxy.redaction import Redactor

if TYPE_CHECKING:
    from vte_proxy.upstream import UpstreamResponse

# Upstream answer headers a client gets back: the request id the SDKs report (``_request_id``)
# and the upstream's rate-limit state. Nothing else: never hop-by-hop or credential headers.
PASSED_HEADERS = ("x-request-id",)
PASSED_PREFIX = "x-ratelimit-"
_MAX_HEADER_VALUE = 256
_DIGITS = re.compile(r"^[0-9]{1,9}$")


def _printable(value: str) -> bool:
    return len(value) <= _MAX_HEADER_VALUE and value.isascii() and value.isprintable()


def valid_retry_after(value: str) -> bool:
    """A Retry-After a client may be given: delay-seconds or an HTTP-date (RFC 9110); anything
    else (a non-ASCII or control byte, a word) is dropped rather than passed on."""
    if _DIGITS.match(value):
        return True
    if not _printable(value):
        return False
    try:
        return parsedate_to_datetime(value) is not None
    except (TypeError, ValueError, IndexError):
        return False


def passed_headers(headers: Mapping[str, str], redactor: Redactor, retry_after: bool = False) -> dict[str, str]:
    """The upstream answer headers passed back to the client (``retry-after`` too for errors),
    each a short printable value without a secret of the provider in it."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in PASSED_HEADERS or lower.startswith(PASSED_PREFIX):
            ok = _printable(value)
        elif lower == "retry-after" and retry_after:
            ok = valid_retry_after(value)
        else:
            continue
        if ok and redactor.bytes(value.encode()) == value.encode():
            out[lower] = value
    return out


# Shapes an upstream's (non-2xx, redacted) error body: (status, OpenAI-shaped error object).
ErrorShaper = Callable[[int, bytes], tuple[int, dict[str, Any]]]


def transport_error(provider: str, exc: BaseException, *, started: bool, first_byte: float | None = None,
                    reason: str | None = None) -> UpstreamError:
    """The one map from an aiohttp/asyncio/OS failure to the gateway's upstream error.

    ``started``: the response headers had arrived (the failure is inside the body). The
    message never holds a URL, a header or a key, only the exception's class name.
    """
    if started:
        if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
            return UpstreamError(provider, 504, f"provider {provider!r} went silent for longer than its idle "
                                 "timeout", reason or "idle")
        return UpstreamError(provider, 502, f"provider {provider!r} broke the connection mid-answer "
                             f"({exc.__class__.__name__})", reason or "truncated")
    # Subclasses first: aiohttp's timeouts are TimeoutErrors too.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        message, status, why = f"could not connect to provider {provider!r} (timeout)", 502, "connect"
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        message, status, why = f"provider {provider!r} did not answer in time", 504, "timeout"
    elif isinstance(exc, TimeoutError):
        message, status, why = f"provider {provider!r} did not answer within {first_byte or 0:g}s", 504, "timeout"
    else:
        message, status = f"could not connect to provider {provider!r} ({exc.__class__.__name__})", 502
        why = "connect"
    return UpstreamError(provider, status, message, reason or why, retryable=True, answered=False)


async def error_from_response(response: UpstreamResponse, shaper: ErrorShaper | None = None,
                              reason: str | None = None) -> UpstreamError:
    """The one map from an upstream's error response (non-2xx) to the gateway's upstream error.

    Without ``shaper`` the upstream's own JSON error body is passed through (secrets removed);
    a non-JSON body gets an OpenAI-shaped one. A ``shaper`` translates a foreign error shape.
    """
    provider, status = response.provider, response.status
    body = await response.error_body()
    headers = response.passed_headers(retry_after=True) or None
    retryable = status == 429 or status >= 500
    if shaper is not None:
        shown, obj = shaper(status, body)
        error: dict[str, Any] = obj["error"]
        return UpstreamError(provider, shown, str(error["message"]), reason or "status", retryable=retryable,
                             code=error.get("code"), body=orjson.dumps(obj), headers=headers)
    passthrough = body if body[:1] == b"{" else None
    return UpstreamError(provider, status, f"provider {provider!r} answered HTTP {status}", reason or "status",
                         retryable=retryable, body=passthrough, headers=headers)


def parse_json_object(provider: str, raw: bytes, reason: str = "protocol") -> dict[str, Any]:
    """``raw`` as a JSON object; 502 ``reason`` when it is not one."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError(provider, 502, f"provider {provider!r} answered with invalid JSON", reason) from None
    if not isinstance(body, dict):
        raise UpstreamError(provider, 502, f"provider {provider!r} answered with a JSON {type(body).__name__}, "
                            "not an object", reason)
    return body


def pool_exhausted(provider: str, size: int) -> UpstreamError:
    """All of a provider's pooled connections stayed busy for longer than its connect timeout:
    the gateway is overloaded towards it (503, never a fall-over: another target would not be
    less busy because of this provider's pool)."""
    return UpstreamError(provider, 503, f"all {size} connections to provider {provider!r} are busy, retry later",
                         "pool", code="overloaded", headers={"retry-after": "1"})
