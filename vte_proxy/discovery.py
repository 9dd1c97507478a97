"""Model discovery: poll ``GET /models`` of providers with ``discover.enabled``.

One task per discovering provider of the current provider set; a reload that replaces the
providers restarts them. A failing poll keeps the last known list and is reported (log,
``vte_upstream_errors_total{reason="discovery"}``, the status page).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from vte_proxy import metrics
from vte_proxy.errors import UpstreamError
from vte_proxy.state import Gateway, GatewayState, ProviderSet

log = logging.getLogger("vte_proxy.discovery")


@dataclass
class DiscoveryStatus:
    last_ok: float | None = None
    last_error: str | None = None
    models: int = 0
    polled: asyncio.Event = field(default_factory=asyncio.Event)


class Discovery:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.status: dict[str, DiscoveryStatus] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._set: ProviderSet | None = None
        gateway.on_swap.append(self._on_swap)

    def _on_swap(self, state: GatewayState) -> None:
        if state.providers is self._set:
            return
        self._set = state.providers
        self.stop()
        loop = asyncio.get_running_loop()
        for p in state.config.providers:
            if p.discover.enabled:
                self.status.setdefault(p.name, DiscoveryStatus())
                self._tasks.append(loop.create_task(self._loop(p.name, p.discover.interval, state.providers)))
        discovering = {p.name for p in state.config.providers if p.discover.enabled}
        for name in list(self.status):
            if name not in discovering:
                del self.status[name]

    async def poll(self, name: str, providers: ProviderSet) -> bool:
        """One discovery round for ``name``; True when it succeeded."""
        status = self.status.setdefault(name, DiscoveryStatus())
        providers.acquire()  # the pool stays open while this poll uses it
        try:
            models = await providers.providers[name].discover()
        except UpstreamError as exc:  # counted where it was created (reason "discovery")
            status.last_error = exc.message
            log.warning("discovery for provider %s failed, keeping %d known models: %s", name, status.models,
                        exc.message)
            status.polled.set()
            return False
        except Exception as exc:
            log.exception("discovery for provider %s raised", name)
            metrics.child(metrics.UPSTREAM_ERRORS, name, "discovery").inc()
            message = exc.__class__.__name__
            status.last_error = message
            log.warning("discovery for provider %s failed, keeping %d known models: %s", name, status.models,
                        message)
            status.polled.set()
            return False
        finally:
            providers.release()
        status.last_ok, status.last_error, status.models = time.time(), None, len(models)
        if providers is self._set and self.gateway.apply_discovery(name, models):
            log.warning("provider %s now lists %d models", name, len(models))
        status.polled.set()
        return True

    async def first_round(self, limit: float) -> None:
        """At start: wait (boundedly) for every provider's first list."""
        waits = [asyncio.create_task(s.polled.wait()) for s in self.status.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=limit)
            for t in pending:
                t.cancel()

    async def _loop(self, name: str, interval: float, providers: ProviderSet) -> None:
        while not providers.retired:
            await self.poll(name, providers)
            await asyncio.sleep(interval)

    def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._tasks.clear()
