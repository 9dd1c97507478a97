"""What-if experiments, not product code: run vte-proxy with parts of its hot path replaced
by the changes docs/performance.md recommends, to measure each one end to end before anyone
changes vte_proxy/. Written against the httpx-based tree the profiles of docs/performance.md
were taken on; a patch whose change vte_proxy/ already has says so and does nothing. A
template for the next experiment. Patches (comma-separated first argument, the rest is the
normal CLI):

  aiohttp  ``Upstream`` (vte_proxy/upstream.py, the only place that talks to providers) on a
           raw ``aiohttp.ClientSession`` instead of ``httpx.AsyncClient`` + ``AiohttpTransport``,
           same interface (send -> status, headers, iter_bytes, read, aclose, error), same
           first-byte timeout and error mapping
  batch    SSE pass-through per upstream read instead of per event: the complete events of one
           read are processed one by one as today, then sent to the client as ONE ASGI message
           (one transport write) instead of one message per event (openai-type providers)
  direct   POST /v1/{endpoint} dispatched by a dict lookup in front of Starlette (its router,
           ServerErrorMiddleware and ExceptionMiddleware, and their per-message send wrappers,
           stay for every other path)
  trim     a thread runs gc.collect() and glibc malloc_trim(0) every 5 s (memory experiment)
  census   a thread logs the live objects by type every 10 s (memory experiment)

    .venv/bin/python bench/whatif.py aiohttp,batch serve --config gateway.yaml --port 8050
    .venv/bin/python bench/run.py --gateway-cmd ".venv/bin/python bench/whatif.py aiohttp,batch"
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

import vte_proxy.upstream as upstream_mod
from vte_proxy.config import ProviderConfig
from vte_proxy.errors import UpstreamError
from vte_proxy.upstream import MAX_ERROR_BODY, MAX_JSON_BODY, Redactor, provider_secrets, status_error


def say(msg: str) -> None:
    print(f"whatif: {msg}", file=sys.stderr, flush=True)


class AiohttpUpstreamResponse:
    def __init__(self, upstream: AiohttpUpstream, response: aiohttp.ClientResponse, deadline: float | None) -> None:
        self._upstream = upstream
        self._response = response
        self._deadline = deadline
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        name = self._upstream.name
        try:
            async for chunk in self._response.content.iter_any():
                if self._deadline is not None and time.monotonic() > self._deadline:
                    raise UpstreamError(504, f"provider {name!r} exceeded its total time limit", "timeout")
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamError(504, f"provider {name!r} went silent for longer than its idle timeout",
                                "idle") from None
        except aiohttp.ClientError as exc:
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
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def aclose(self) -> None:
        self._response.release()

    async def error(self) -> UpstreamError:
        try:
            body = self._upstream.redactor.bytes(await self.read(MAX_ERROR_BODY))
        except UpstreamError:
            body = b""
        finally:
            await self.aclose()
        return status_error(self._upstream.name, self.status, body, self.headers.get("retry-after"))


class AiohttpUpstream:
    def __init__(self, provider: ProviderConfig, transport: Any = None) -> None:
        self.name = provider.name
        t = provider.timeouts
        self._first_byte = t.first_byte or None
        self._total = t.total
        self._limit = provider.max_connections
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect or None, sock_read=t.idle or None)
        self.redactor = Redactor(provider_secrets(provider))
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, trust_env=False)
        return self._session

    async def send(self, method: str, url: str, headers: dict[str, str], content: bytes | None = None,
                   *, raise_for_status: bool = True) -> AiohttpUpstreamResponse:
        deadline = time.monotonic() + self._total if self._total else None
        try:
            async with asyncio.timeout(self._first_byte):
                response = await self._client().request(method, url, headers=headers, data=content,
                                                        allow_redirects=False)
        except TimeoutError:
            raise UpstreamError(504, f"provider {self.name!r} did not answer within {self._first_byte:g}s",
                                "timeout", retryable=True) from None
        except aiohttp.ServerTimeoutError:
            raise UpstreamError(502, f"could not connect to provider {self.name!r} (timeout)", "connect",
                                retryable=True) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(502, f"could not connect to provider {self.name!r} ({exc.__class__.__name__})",
                                "connect", retryable=True) from None
        result = AiohttpUpstreamResponse(self, response, deadline)
        if raise_for_status and response.status >= 400:
            raise await result.error()
        return result

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def patch_aiohttp() -> None:
    if "httpx" not in vars(upstream_mod):
        say("aiohttp: vte_proxy.upstream no longer uses httpx; nothing to patch")
        return
    import vte_proxy.providers.openai as openai_mod
    import vte_proxy.providers.vertex as vertex_mod

    for mod in (upstream_mod, openai_mod, vertex_mod):
        mod.Upstream = AiohttpUpstream  # type: ignore[attr-defined]


# ---- batch: one ASGI message per upstream read


async def split_event_batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """vte_proxy.sse.split_events, but yielding the complete events of each read together."""
    buf = b""
    async for chunk in chunks:
        if b"\r" in chunk or buf[-1:] == b"\r":
            buf = (buf + chunk).replace(b"\r\n", b"\n")
        else:
            buf += chunk
        if b"\n\n" not in buf:
            continue
        *complete, buf = buf.split(b"\n\n")
        batch = [ev for ev in complete if ev]
        if batch:
            yield batch


def patch_batch() -> None:
    import vte_proxy.sse as sse_mod

    if "list" in str(sse_mod.split_events.__annotations__.get("return", "")):
        say("batch: split_events already yields batches; nothing to patch")
        return
    import vte_proxy.providers.openai as openai_mod
    import vte_proxy.proxy as proxy_mod
    from vte_proxy import metrics
    from vte_proxy.accounting import record_usage
    from vte_proxy.sse import DONE, error_event

    async def pass_through(answer: Any, watcher: Any, rec: Any) -> AsyncIterator[bytes]:
        process = watcher.process
        try:
            async for batch in answer.events:
                outs = []
                for ev in batch:
                    out = process(ev)
                    if out is None:
                        continue
                    outs.append(out)
                    if watcher.done:
                        break
                if outs:
                    if rec.ttft is None:
                        rec.ttft = time.monotonic() - rec.started
                    yield outs[0] if len(outs) == 1 else b"\n\n".join(outs)
                if watcher.done:
                    break
        except UpstreamError as exc:
            metrics.child(metrics.UPSTREAM_ERRORS, rec.provider, exc.reason).inc()
            rec.status, rec.error = exc.status, exc.reason
            yield error_event(exc)
            return
        finally:
            record_usage(rec, watcher.usage)
        if not watcher.done:
            if not watcher.finished:
                cut = UpstreamError(502, f"provider {rec.provider!r} ended the stream before it was complete",
                                    "truncated")
                metrics.child(metrics.UPSTREAM_ERRORS, rec.provider, "truncated").inc()
                rec.status, rec.error = 502, "truncated"
                yield error_event(cut)
                return
            yield DONE

    setattr(openai_mod, "split_events", split_event_batches)  # noqa: B010 - a patch, on purpose
    setattr(proxy_mod, "_pass_through", pass_through)  # noqa: B010


# ---- direct: /v1 POSTs in front of Starlette


def patch_direct() -> None:
    import vte_proxy.app as app_mod
    from vte_proxy.http import ProxyEndpoint

    if hasattr(app_mod, "FastPath"):
        say("direct: vte_proxy.app already dispatches /v1 POSTs in front of Starlette; nothing to patch")
        return

    original = app_mod.create_app

    def create_app(config_path: str, transport: Any = None) -> Any:
        guard: Any = original(config_path, transport)
        cors = guard.app
        starlette = cors.app
        table = {r.path: r.endpoint for r in starlette.routes
                 if isinstance(getattr(r, "endpoint", None), ProxyEndpoint)}

        async def front(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["method"] == "POST":
                endpoint = table.get(scope["path"])
                if endpoint is not None:
                    scope["app"] = starlette
                    await endpoint(scope, receive, send)
                    return
            await starlette(scope, receive, send)

        cors.app = front
        return guard

    setattr(app_mod, "create_app", create_app)  # noqa: B010 - a patch, on purpose


# ---- trim: is memory kept after a burst of streams reclaimable?


def patch_trim() -> None:
    """Every 5 s, from a thread: gc.collect() and glibc's malloc_trim(0) (returns free heap
    pages to the OS). If RSS falls back after the streams with this, the memory kept without it
    was free-but-not-returned heap, not live objects."""
    import ctypes
    import gc
    import threading

    libc = ctypes.CDLL("libc.so.6")

    def loop() -> None:
        while True:
            time.sleep(5)
            gc.collect()
            libc.malloc_trim(0)

    threading.Thread(target=loop, name="whatif-trim", daemon=True).start()


def patch_census() -> None:
    """Every 10 s, from a thread: the number of live objects by type (top 12), to stderr
    (the gateway's log), to tell live objects from freed-but-kept memory."""
    import collections
    import gc
    import threading

    def loop() -> None:
        while True:
            time.sleep(10)
            counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
            top = ", ".join(f"{k} {v}" for k, v in counts.most_common(12))
            say(f"census: {sum(counts.values())} objects; {top}")

    threading.Thread(target=loop, name="whatif-census", daemon=True).start()


PATCHES = {"aiohttp": patch_aiohttp, "batch": patch_batch, "direct": patch_direct, "trim": patch_trim,
           "census": patch_census}


if __name__ == "__main__":
    names = [n for n in sys.argv[1].split(",") if n] if len(sys.argv) > 1 and sys.argv[1] != "serve" else []
    for name in names:
        PATCHES[name]()
    from vte_proxy.cli import main

    sys.exit(main(sys.argv[1 + bool(names):] if names else sys.argv[1:]))
