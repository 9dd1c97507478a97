"""The upstream boundary: every call to a provider goes through :class:`Upstream`.

It owns one pooled ``httpx.AsyncClient`` per provider (aiohttp transport: httpcore's pool
is the bottleneck under concurrency, see NOTES.md), applies the provider's timeouts and maps
every transport failure to :class:`~vte_proxy.errors.UpstreamError`, whose message never
holds a URL, a header or a key. Tests hand in an ``httpx`` transport instead of patching.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import httpx
from httpx_aiohttp import AiohttpTransport

from vte_proxy.config import ProviderConfig
from vte_proxy.errors import UpstreamError

TransportFactory = Callable[[ProviderConfig], httpx.AsyncBaseTransport]

# Upstream error bodies are read up to this size; beyond it they are cut (they are only shown).
MAX_ERROR_BODY = 64 * 1024
MAX_JSON_BODY = 256 * 1024 * 1024


def default_transport(provider: ProviderConfig) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(max_connections=provider.max_connections,
                          max_keepalive_connections=provider.max_connections, keepalive_expiry=30)
    return AiohttpTransport(limits=limits)


class Redactor:
    """Removes a provider's secrets from text that may reach a client or a log."""

    def __init__(self, secrets: list[str]) -> None:
        self._secrets = [s.encode() for s in secrets if s and len(s) >= 4]

    def bytes(self, data: bytes) -> bytes:
        for s in self._secrets:
            if s in data:
                data = data.replace(s, b"[redacted]")
        return data


def provider_secrets(provider: ProviderConfig) -> list[str]:
    """Everything in a provider's config that may be a credential: its key and header values."""
    secrets = [v for v in provider.headers.values() if len(v) >= 8]
    if provider.api_key:
        secrets.append(provider.api_key.get_secret_value())
    return secrets


class UpstreamResponse:
    """A response whose headers have arrived; the body is read through this object."""

    def __init__(self, upstream: Upstream, response: httpx.Response, deadline: float | None) -> None:
        self._upstream = upstream
        self._response = response
        self._deadline = deadline
        self.status = response.status_code
        self.headers = response.headers

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; silence beyond ``idle`` or a cut raise UpstreamError."""
        name = self._upstream.name
        try:
            async for chunk in self._response.aiter_bytes():
                if self._deadline is not None and time.monotonic() > self._deadline:
                    raise UpstreamError(504, f"provider {name!r} exceeded its total time limit", "timeout")
                yield chunk
        except httpx.TimeoutException:
            raise UpstreamError(504, f"provider {name!r} went silent for longer than its idle timeout",
                                "idle") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(502, f"provider {name!r} broke the connection mid-answer "
                                f"({exc.__class__.__name__})", "truncated") from None

    async def read(self, limit: int = MAX_JSON_BODY) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_bytes():
            size += len(chunk)
            if size > limit:
                if limit == MAX_ERROR_BODY:
                    break
                raise UpstreamError(502, f"provider {self._upstream.name!r} answered with a body over "
                                    f"{limit} bytes", "protocol")
            parts.append(chunk)
        return b"".join(parts)

    async def aclose(self) -> None:
        await self._response.aclose()

    async def error(self) -> UpstreamError:
        """This (non-2xx) response as an error that passes the upstream's status and body on."""
        try:
            body = self._upstream.redactor.bytes(await self.read(MAX_ERROR_BODY))
        except UpstreamError:
            body = b""
        finally:
            await self.aclose()
        return status_error(self._upstream.name, self.status, body, self.headers.get("retry-after"))


def status_error(provider: str, status: int, body: bytes, retry_after: str | None) -> UpstreamError:
    headers = {"retry-after": retry_after} if retry_after else {}
    # Pass the provider's own JSON error through; anything else gets an OpenAI-shaped body.
    passthrough = body if body[:1] == b"{" else None
    return UpstreamError(status, f"provider {provider!r} answered HTTP {status}", "status",
                         retryable=status == 429 or status >= 500, body=passthrough, headers=headers)


class Upstream:
    """One provider's connection pool and the only place that talks to it."""

    def __init__(self, provider: ProviderConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = provider.name
        t = provider.timeouts
        self._first_byte = t.first_byte or None
        self._total = t.total
        self.redactor = Redactor(provider_secrets(provider))
        self._client = httpx.AsyncClient(
            transport=transport or default_transport(provider),
            timeout=httpx.Timeout(connect=t.connect or None, read=t.idle or None, write=t.idle or None,
                                  pool=t.connect or None),
            follow_redirects=False,
            trust_env=False,
        )

    async def send(self, method: str, url: str, headers: dict[str, str], content: bytes | None = None,
                   *, raise_for_status: bool = True) -> UpstreamResponse:
        """Send a request and wait for the response headers (``first_byte`` timeout)."""
        request = self._client.build_request(method, url, headers=headers, content=content)
        deadline = time.monotonic() + self._total if self._total else None
        try:
            async with asyncio.timeout(self._first_byte):
                response = await self._client.send(request, stream=True)
        except TimeoutError:
            raise UpstreamError(504, f"provider {self.name!r} did not answer within "
                                f"{self._first_byte:g}s", "timeout", retryable=True) from None
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                raise UpstreamError(502, f"could not connect to provider {self.name!r} (timeout)", "connect",
                                    retryable=True) from None
            raise UpstreamError(504, f"provider {self.name!r} did not answer in time", "timeout",
                                retryable=True) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(502, f"could not connect to provider {self.name!r} ({exc.__class__.__name__})",
                                "connect", retryable=True) from None
        result = UpstreamResponse(self, response, deadline)
        if raise_for_status and response.status_code >= 400:
            raise await result.error()
        return result

    async def aclose(self) -> None:
        await self._client.aclose()
