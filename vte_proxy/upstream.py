"""The upstream boundary: every call to a provider goes through :class:`Upstream`.

It owns one pooled ``aiohttp.ClientSession`` per provider, applies the provider's timeouts
and maps every transport failure to :class:`~vte_proxy.errors.UpstreamError`, whose message
never holds a URL, a header or a key (those maps are in :mod:`vte_proxy.upstream_errors`; the
provider's secrets and their removal in :mod:`vte_proxy.redaction`).

Why aiohttp and not httpx here: the profile and A/B figures in docs/performance.md show that
the httpx layer (``AsyncClient.send`` with its auth/cookie/redirect machinery, request and
response object conversion in the ``httpx-aiohttp`` transport) cost more per request than the
whole rest of the gateway and kept it from its throughput targets; the raw session, behind
this one module, does not. Tests inject a connector (:data:`ConnectorFactory`) instead of
patching anything.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
from yarl import URL

from vte_proxy import metrics
from vte_proxy.config import ProviderConfig
from vte_proxy.errors import UpstreamError
from vte_proxy.keypool import STATES, KeyPool, PoolKey, parse_retry_after
from vte_proxy.redaction import Redactor, provider_secrets
from vte_proxy.tracing import KEY_TRIES
from vte_proxy.upstream_errors import (
    ErrorShaper,
    error_from_response,
    parse_json_object,
    passed_headers,
    pool_exhausted,
    transport_error,
)

log = logging.getLogger("vte_proxy.upstream")

ConnectorFactory = Callable[[ProviderConfig], aiohttp.BaseConnector]

# Upstream error bodies are read up to this size; beyond it they are cut (they are only shown).
MAX_ERROR_BODY = 64 * 1024
MAX_JSON_BODY = 256 * 1024 * 1024
# Seconds an idle upstream connection stays in the pool.
KEEPALIVE_TIMEOUT = 30.0


def default_connector(provider: ProviderConfig) -> aiohttp.BaseConnector:
    return aiohttp.TCPConnector(limit=provider.max_connections, limit_per_host=0,
                                keepalive_timeout=KEEPALIVE_TIMEOUT, ttl_dns_cache=300)


def outbound_proxy(provider: ProviderConfig) -> URL | None:
    """The provider's outbound proxy. aiohttp turns credentials in it into Proxy-Authorization
    (on each plain-http request, on the CONNECT of an https one); transport errors are mapped
    by exception class only (:meth:`Upstream.send`), so the URL never reaches a message."""
    return None if provider.proxy is None else URL(provider.proxy.get_secret_value())


class IdleWatch:
    """Bounds the silence between the reads of a body with one timer per ``idle`` seconds
    rather than one per read (aiohttp's ``sock_read`` re-arms a timer on every packet, a cost
    paid for each frame of every stream): a read only notes the time; when the timer fires
    after data came meanwhile, it is set again for the rest of the interval. Silence fails the
    pending read with a TimeoutError (mapped to 504 ``idle``)."""

    __slots__ = ("_content", "_handle", "_idle", "_loop", "last")

    def __init__(self, content: aiohttp.StreamReader, idle: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._content = content
        self._idle = idle
        self.last = self._loop.time()
        self._handle = self._loop.call_at(self.last + idle, self._check)

    def _check(self) -> None:
        due = self.last + self._idle
        if self._loop.time() >= due:
            self._content.set_exception(TimeoutError())
        else:
            self._handle = self._loop.call_at(due, self._check)

    def cancel(self) -> None:
        self._handle.cancel()


class UpstreamResponse:
    """A response whose headers have arrived; the body is read through this object."""

    __slots__ = ("_deadline", "_held", "_response", "_upstream", "headers", "provider", "status")

    def __init__(self, upstream: Upstream, response: aiohttp.ClientResponse, deadline: float | None) -> None:
        self._upstream = upstream
        self._response = response
        self._deadline = deadline
        self._held = True  # counted in the upstream's busy connections until released
        self.provider = upstream.name
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; silence beyond ``idle``, the ``total`` deadline passing
        (also while nothing arrives) or a cut raise UpstreamError."""
        content = self._response.content
        idle = self._upstream.idle
        watch = IdleWatch(content, idle) if idle and not content.is_eof() else None  # no timer for a body all here
        loop = asyncio.get_running_loop()
        try:
            while chunk := await (content.readany() if self._deadline is None else self._before_deadline()):
                if watch is not None:
                    watch.last = loop.time()
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise self._too_long() from None
            raise transport_error(self.provider, exc, started=True) from None
        finally:
            if watch is not None:
                watch.cancel()

    async def _before_deadline(self) -> bytes:
        deadline = asyncio.timeout(max(self._deadline - time.monotonic(), 0) if self._deadline else None)
        try:
            async with deadline:
                return await self._response.content.readany()
        except TimeoutError:
            if deadline.expired():  # by its own timer: the loop's clock may be a hair behind time.monotonic()
                raise self._too_long() from None
            raise

    def _too_long(self) -> UpstreamError:
        return UpstreamError(self.provider, 504, f"provider {self.provider!r} exceeded its total time limit",
                             "timeout")

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

    def passed_headers(self, retry_after: bool = False) -> dict[str, str]:
        """The headers of this answer the client gets back (:func:`passed_headers`)."""
        return passed_headers(self.headers, self._upstream.redactor, retry_after)

    async def aclose(self) -> None:
        # Back to the pool when fully read; closed (never reused) when abandoned mid-body.
        self._response.release()
        if self._held:
            self._held = False
            self._upstream.busy -= 1

    async def error_body(self) -> bytes:
        """The (non-2xx) body, cut at MAX_ERROR_BODY, with the provider's secrets removed."""
        try:
            return self._upstream.redactor.bytes(await self.read(MAX_ERROR_BODY))
        except UpstreamError:
            return b""
        finally:
            await self.aclose()


# How a provider type sends its key: the headers for one key value.
AuthHeaders = Callable[[str], dict[str, str]]
# Statuses that say something about the key rather than the request.
KEY_COOLS, KEY_REJECTED = (429,), (401, 403)


class Upstream:
    """One provider's connection pool and the only place that talks to it.

    With ``api_keys``, it also owns the provider's :class:`~vte_proxy.keypool.KeyPool`: each
    request goes out with a key picked by weight (``auth`` makes its headers); a 429 cools the
    key and a 401/403 disables it, and the request is sent again with another key, all before
    any byte reached the client. With no key ready, a 429 (``upstream_keys_cooling``, with the
    earliest Retry-After) or 503 (``upstream_keys_rejected``) is raised, reason ``keys``.
    """

    def __init__(self, provider: ProviderConfig, connector: ConnectorFactory | None = None,
                 auth: AuthHeaders | None = None) -> None:
        self.name = provider.name
        t = provider.timeouts
        self._first_byte = t.first_byte or None
        self._total = t.total
        # connect bounds the wait for a pooled connection plus the TCP/TLS connect; the wait for
        # headers is bounded in _send, each silence inside a body by IdleWatch.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=t.connect or None, sock_connect=t.connect or None)
        self.idle = t.idle or None
        # Requests holding (or waiting for) a pooled connection: one that times out while all
        # max_connections were held waited for the pool, not for the provider.
        self.busy = 0
        self.redactor = Redactor(provider_secrets(provider))
        self._provider = provider
        self._connector = connector or default_connector
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}
        self._proxy = outbound_proxy(provider)
        self.pool: KeyPool | None = None
        self._closed = False
        self._auth: dict[str, dict[str, str]] = {}
        if provider.api_keys and auth is not None:
            keys = [PoolKey(k.name, k.key.get_secret_value(), k.weight) for k in provider.api_keys]
            self.pool = KeyPool(keys, provider.cooldown)
            self._auth = {k.name: auth(k.secret) for k in keys}
            self._publish()

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
        if self.pool is None:
            return await self._send(method, url, headers, content, shaper, reason)
        tried: list[str] = []
        traced = KEY_TRIES.get()  # the attempt's span while tracing is on: one span per key
        while (key := self.pool.pick(tried)) is not None:
            tried.append(key.name)
            sent = headers if traced is None else traced.key(key.name, headers)
            response = await self._send(method, url, {**sent, **self._auth[key.name]}, content, shaper, reason,
                                        key_status=True)
            if response.status not in KEY_COOLS + KEY_REJECTED:
                return response
            if traced is not None:
                traced.key_failed(response.status)
            await self._rest(key, response, shaper, reason)
        raise self._exhausted()

    async def _rest(self, key: PoolKey, response: UpstreamResponse, shaper: ErrorShaper | None,
                    reason: str | None) -> None:
        """Take ``key`` out for what ``response`` (429, 401 or 403) says; count the failure."""
        assert self.pool is not None
        await error_from_response(response, shaper, reason)  # counted in vte_upstream_errors_total
        if response.status in KEY_COOLS:
            seconds = self.pool.cool(key.name, parse_retry_after(response.headers.get("retry-after")))
            log.warning("provider %s: upstream key %s is rate limited, resting it %.0fs", self.name, key.name,
                        seconds)
            asyncio.get_running_loop().call_later(seconds + 0.01, self._publish)
        else:
            self.pool.disable(key.name)
            log.error("provider %s: upstream key %s was rejected (HTTP %d); it stays out until the config "
                      "changes", self.name, key.name, response.status)
        self._publish()

    def adopt(self, old: Upstream) -> None:
        """After a reload: keep the standing of the keys the new config did not change."""
        if self.pool is None or old.pool is None:
            return
        self.pool.adopt(old.pool)
        self._publish()
        wait = self.pool.seconds_left()
        if wait:
            asyncio.get_running_loop().call_later(max(wait.values()) + 0.01, self._publish)

    def _exhausted(self) -> UpstreamError:
        assert self.pool is not None
        wait = self.pool.retry_after()
        if wait is None:
            return UpstreamError(self.name, 503, f"every upstream key of provider {self.name!r} was rejected",
                                 "keys", retryable=True, code="upstream_keys_rejected")
        return UpstreamError(self.name, 429, f"every upstream key of provider {self.name!r} is rate limited",
                             "keys", retryable=True, code="upstream_keys_cooling",
                             headers={"retry-after": str(max(math.ceil(wait), 1))})

    def _publish(self) -> None:
        """The pool's key states into ``vte_upstream_key_state``."""
        if self.pool is not None and not self._closed:
            for name, state in self.pool.states().items():
                metrics.set_states(metrics.KEY_STATE, (self.name, name), state, STATES)

    async def _send(self, method: str, url: str, headers: Mapping[str, str], content: bytes | None,
                    shaper: ErrorShaper | None, reason: str | None, key_status: bool = False) -> UpstreamResponse:
        """One request; ``key_status``: a 401/403/429 is returned, not raised (the pool decides)."""
        deadline = time.monotonic() + self._total if self._total else None
        wait = min(self._first_byte or self._total or 0, self._total or self._first_byte or 0) or self.idle
        size = self._provider.max_connections
        queued = self.busy >= size
        self.busy += 1
        try:
            async with asyncio.timeout(wait):  # timeouts.total bounds the whole call, headers included
                response = await self._client().request(method, self._url(url), headers=headers, data=content,
                                                        allow_redirects=False, proxy=self._proxy)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.busy -= 1
            if queued and self.busy >= size:
                raise pool_exhausted(self.name, size) from None
            raise transport_error(self.name, exc, started=False, first_byte=wait, reason=reason) from None
        except BaseException:
            self.busy -= 1
            raise
        result = UpstreamResponse(self, response, deadline)
        if response.status >= 400 and not (key_status and response.status in KEY_COOLS + KEY_REJECTED):
            raise await error_from_response(result, shaper, reason)
        return result

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
