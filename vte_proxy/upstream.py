"""The upstream boundary: every call to a provider goes through :class:`Upstream`.

It owns one pooled ``aiohttp.ClientSession`` per provider, applies the provider's timeouts
and maps every transport failure to :class:`~vte_proxy.errors.UpstreamError`, whose message
never holds a URL, a header or a key.

Why aiohttp and not httpx here: the profile and A/B figures in docs/performance.md show that
the httpx layer (``AsyncClient.send`` with its auth/cookie/redirect machinery, request and
response object conversion in the ``httpx-aiohttp`` transport) cost more per request than the
whole rest of the gateway and kept it from its throughput targets; the raw session, behind
this one module, does not. Tests inject a connector (:data:`ConnectorFactory`) instead of
patching anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import orjson
from yarl import URL

from vte_proxy.config import ProviderConfig
from vte_proxy.errors import UpstreamError

ConnectorFactory = Callable[[ProviderConfig], aiohttp.BaseConnector]

# Upstream error bodies are read up to this size; beyond it they are cut (they are only shown).
MAX_ERROR_BODY = 64 * 1024
MAX_JSON_BODY = 256 * 1024 * 1024
# Seconds an idle upstream connection stays in the pool.
KEEPALIVE_TIMEOUT = 30.0


def default_connector(provider: ProviderConfig) -> aiohttp.BaseConnector:
    return aiohttp.TCPConnector(limit=provider.max_connections, limit_per_host=0,
                                keepalive_timeout=KEEPALIVE_TIMEOUT, ttl_dns_cache=300)


def provider_secrets(provider: ProviderConfig) -> list[str]:
    """Everything in a provider's config that may be a credential: its key and header values."""
    secrets = [v for v in provider.headers.values() if len(v) >= 8]
    if provider.api_key:
        secrets.append(provider.api_key.get_secret_value())
    return secrets


class Redactor:
    """Removes a provider's secrets from text that may reach a client or a log."""

    def __init__(self, secrets: list[str]) -> None:
        self._secrets = [s.encode() for s in secrets if s and len(s) >= 4]

    def bytes(self, data: bytes) -> bytes:
        for s in self._secrets:
            if s in data:
                data = data.replace(s, b"[redacted]")
        return data


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
    return UpstreamError(provider, status, message, reason or why, retryable=True)


async def error_from_response(response: UpstreamResponse, shaper: ErrorShaper | None = None,
                              reason: str | None = None) -> UpstreamError:
    """The one map from an upstream's error response (non-2xx) to the gateway's upstream error.

    Without ``shaper`` the upstream's own JSON error body is passed through (secrets removed);
    a non-JSON body gets an OpenAI-shaped one. A ``shaper`` translates a foreign error shape.
    """
    provider, status = response.provider, response.status
    body = await response.error_body()
    retry_after = response.headers.get("retry-after")
    headers = {"retry-after": retry_after} if retry_after else None
    retryable = status == 429 or status >= 500
    if shaper is not None:
        shown, obj = shaper(status, body)
        error: dict[str, Any] = obj["error"]
        return UpstreamError(provider, shown, str(error["message"]), reason or "status", retryable=retryable,
                             code=error.get("code"), body=orjson.dumps(obj), headers=headers)
    passthrough = body if body[:1] == b"{" else None
    return UpstreamError(provider, status, f"provider {provider!r} answered HTTP {status}", reason or "status",
                         retryable=retryable, body=passthrough, headers=headers)


class UpstreamResponse:
    """A response whose headers have arrived; the body is read through this object."""

    __slots__ = ("_deadline", "_response", "_upstream", "headers", "provider", "status")

    def __init__(self, upstream: Upstream, response: aiohttp.ClientResponse, deadline: float | None) -> None:
        self._upstream = upstream
        self._response = response
        self._deadline = deadline
        self.provider = upstream.name
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; silence beyond ``idle`` or a cut raise UpstreamError."""
        try:
            async for chunk in self._response.content.iter_any():
                if self._deadline is not None and time.monotonic() > self._deadline:
                    raise UpstreamError(self.provider, 504, f"provider {self.provider!r} exceeded its total "
                                        "time limit", "timeout")
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(self.provider, exc, started=True) from None

    async def read(self, limit: int = MAX_JSON_BODY) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_bytes():
            size += len(chunk)
            if size > limit:
                if limit == MAX_ERROR_BODY:
                    break
                raise UpstreamError(self.provider, 502, f"provider {self.provider!r} answered with a body over "
                                    f"{limit} bytes", "protocol")
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def read_json(self, reason: str = "protocol") -> dict[str, Any]:
        """The whole body as a JSON object (502 ``reason`` otherwise); the response is released."""
        try:
            raw = await self.read()
        finally:
            await self.aclose()
        return parse_json_object(self.provider, raw, reason)

    async def aclose(self) -> None:
        # Back to the pool when fully read; closed (never reused) when abandoned mid-body.
        self._response.release()

    async def error_body(self) -> bytes:
        """The (non-2xx) body, cut at MAX_ERROR_BODY, with the provider's secrets removed."""
        try:
            return self._upstream.redactor.bytes(await self.read(MAX_ERROR_BODY))
        except UpstreamError:
            return b""
        finally:
            await self.aclose()


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


class Upstream:
    """One provider's connection pool and the only place that talks to it."""

    def __init__(self, provider: ProviderConfig, connector: ConnectorFactory | None = None) -> None:
        self.name = provider.name
        t = provider.timeouts
        self._first_byte = t.first_byte or None
        self._total = t.total
        # sock_read bounds every read: the wait for headers and each silence inside a body.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect or None, sock_read=t.idle or None)
        self.redactor = Redactor(provider_secrets(provider))
        self._provider = provider
        self._connector = connector or default_connector
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop (aiohttp binds sessions to a loop).
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=self._connector(self._provider), timeout=self._timeout,
                                                  trust_env=False, auto_decompress=True)
        return self._session

    def _url(self, url: str) -> URL:
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) > 10_000:
                self._urls.clear()
            parsed = self._urls[url] = URL(url, encoded=True)
        return parsed

    async def send(self, method: str, url: str, headers: Mapping[str, str], content: bytes | None = None,
                   *, shaper: ErrorShaper | None = None, reason: str | None = None) -> UpstreamResponse:
        """Send a request and wait for the response headers (``first_byte`` timeout); a non-2xx
        answer is raised as an UpstreamError (``shaper`` translates a foreign error shape;
        ``reason`` overrides the metric's reason, e.g. ``discovery``)."""
        deadline = time.monotonic() + self._total if self._total else None
        try:
            async with asyncio.timeout(self._first_byte):
                response = await self._client().request(method, self._url(url), headers=headers, data=content,
                                                        allow_redirects=False)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise transport_error(self.name, exc, started=False, first_byte=self._first_byte,
                                  reason=reason) from None
        result = UpstreamResponse(self, response, deadline)
        if response.status >= 400:
            raise await error_from_response(result, shaper, reason)
        return result

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
