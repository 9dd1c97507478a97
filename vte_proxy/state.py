"""The gateway's state and its one reference.

A :class:`GatewayState` is everything a request needs (config, routing table, keys,
providers with their connection pools), built completely before it is used and never
changed. :class:`Gateway` holds the current one; a reload or a discovery result builds a new
state and swaps the reference in one assignment. A request takes the state once, at its
start, and keeps it to its end; the replaced providers are closed when their last request
is done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vte_proxy import metrics
from vte_proxy.auth import KeyRing
from vte_proxy.balancing import BREAKER_STATES, Balancer
from vte_proxy.config import GatewayConfig, StreamMode
from vte_proxy.config_yaml import read_config
from vte_proxy.keypool import STATES as KEY_STATES
from vte_proxy.limits import Limiter, Stores
from vte_proxy.limits.observe import LimitMetrics
from vte_proxy.loader import ConfigError, LoadedConfig, config_hash, load_config
from vte_proxy.providers import build_provider
from vte_proxy.providers.base import Provider
from vte_proxy.routing import RoutingError, RoutingTable, build_routing
from vte_proxy.upstream import ConnectorFactory, Upstream

log = logging.getLogger("vte_proxy.state")

# Settings the server reads once, at start; a reload swaps everything else.
START_ONLY = ("shutdown_grace", "header_timeout")



@dataclass(eq=False)
class ProviderSet:
    """The providers built for one config, closed once retired and idle."""

    providers: dict[str, Provider]
    label: str = ""  # the config hash it was built for, for the log
    in_flight: int = 0
    retired: bool = False
    _closing: asyncio.Task[None] | None = None

    def acquire(self) -> None:
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        if self.retired and self.in_flight == 0:
            self._close_soon()

    def retire(self) -> None:
        self.retired = True
        if self.in_flight == 0:
            self._close_soon()

    def _close_soon(self) -> None:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.aclose())

    async def aclose(self) -> None:
        for p in self.providers.values():
            try:
                await p.aclose()
            except Exception:  # closing must not fail a reload
                log.warning("closing provider %s failed", p.name, exc_info=True)
        if self.retired:
            log.info("closed the connections of the retired config %s (its last request is done)", self.label)


@dataclass(frozen=True, eq=False)
class GatewayState:
    loaded: LoadedConfig
    routing: RoutingTable
    keys: KeyRing
    providers: ProviderSet
    stream_modes: Mapping[str, StreamMode]
    discovered: Mapping[str, tuple[str, ...]]
    limiter: Limiter
    loaded_at: float = field(default_factory=time.time)
    # Strategies' figures and circuit breakers per (route, target): one per process, kept
    # across reloads (the Gateway's), so a reload does not forget a dead target.
    balancer: Balancer = field(default_factory=Balancer)

    @property
    def config(self) -> GatewayConfig:
        return self.loaded.config


@dataclass
class ReloadFailure:
    at: float
    message: str


def build_state(loaded: LoadedConfig, discovered: Mapping[str, tuple[str, ...]],
                connector: ConnectorFactory | None = None, stores: Stores | None = None,
                balancer: Balancer | None = None, previous: ProviderSet | None = None) -> GatewayState:
    """The state of one config. Its limiter counts in ``stores`` (the app's, which outlive
    every config, so a reload keeps the counters); a fresh set when none is given.
    ``previous``: the providers it replaces, whose key pools hand on the standing of unchanged
    keys (none: every key starts ready)."""
    config = loaded.config
    routing = build_routing(config, discovered)
    providers = {p.name: build_provider(p, connector) for p in config.providers}
    if previous is not None:
        _adopt_pools(providers, previous.providers)
    modes = {p.name: p.stream_mode or config.stream_mode for p in config.providers}
    store = (stores or Stores()).get(config.limits)
    return GatewayState(loaded, routing, KeyRing(config.keys), ProviderSet(providers, loaded.sha256[:12]), modes,
                        dict(discovered), Limiter(config, store, observer=LimitMetrics()),
                        balancer=balancer or Balancer())


def _adopt_pools(new: Mapping[str, Provider], old: Mapping[str, Provider]) -> None:
    for name, provider in new.items():
        upstream, before = getattr(provider, "upstream", None), getattr(old.get(name), "upstream", None)
        if isinstance(upstream, Upstream) and isinstance(before, Upstream):
            upstream.adopt(before)


def pinned_state(scope: MutableMapping[str, Any], gateway: Gateway) -> GatewayState:
    """The state one request uses from its start to its end: pinned in its ASGI scope by the
    first layer that asks (the middleware), so every layer below sees the same one."""
    state: GatewayState | None = scope.get("vte.state")
    if state is None:
        state = scope["vte.state"] = gateway.state
    return state


def publish_breaker(route: str, target: str, state: str) -> None:
    """A circuit changed state: ``vte_circuit_breaker_state``."""
    metrics.set_states(metrics.BREAKER_STATE, (route, target), state, BREAKER_STATES)


def _warn_start_only(old: GatewayConfig, new: GatewayConfig) -> None:
    for name in START_ONLY:
        if getattr(old.server, name, None) != getattr(new.server, name, None):
            log.warning("server.%s changed: it takes effect when the process restarts", name)


class Gateway:
    """Holds the current :class:`GatewayState` and replaces it on reload."""

    def __init__(self, config_path: str, connector: ConnectorFactory | None = None,
                 stores: Stores | None = None) -> None:
        self.config_path = config_path
        self.stores = stores or Stores()  # the limit counters: they outlive every config
        self.config_dir = Path(os.path.abspath(config_path)).parent
        self.connector = connector
        self._state: GatewayState | None = None
        self.last_failure: ReloadFailure | None = None
        self.draining = False
        self.reloads = {"success": 0, "failure": 0}
        self._lock = asyncio.Lock()
        self._failed_hash = ""
        self.on_swap: list[Callable[[GatewayState], None]] = []
        self.balancer = Balancer(on_change=publish_breaker)

    @property
    def state(self) -> GatewayState:
        if self._state is None:
            raise RuntimeError("no config loaded")
        return self._state

    @property
    def ready(self) -> bool:
        return self._state is not None and not self.draining

    def in_flight(self) -> int:
        """Requests in flight on the current config (not those still finishing on a retired one)."""
        return self._state.providers.in_flight if self._state is not None else 0

    def _swap(self, new: GatewayState) -> None:
        old = self._state
        self._state = new  # the one assignment requests see
        metrics.set_models_available(dict(new.routing.counts))
        self._forget_gone(new)
        if old is not None and old.providers is not new.providers:
            old.providers.retire()
        for hook in self.on_swap:
            hook(new)

    def _forget_gone(self, new: GatewayState) -> None:
        """Drop the balancer slots and state series of routes, targets and keys that are gone."""
        circuits = {(e.name, t.exposed) for e in new.routing.entries.values() if e.route for t in e.targets}
        self.balancer.keep(circuits)
        metrics.forget_states(metrics.BREAKER_STATE, circuits, BREAKER_STATES)
        keys = {(p.name, k.name) for p in new.config.providers for k in p.api_keys or ()}
        metrics.forget_states(metrics.KEY_STATE, keys, KEY_STATES)

    def load_initial(self) -> GatewayState:
        """Load the config at start; raise ConfigError when it is unusable."""
        loaded = load_config(self.config_path)
        self._swap(build_state(loaded, {}, self.connector, self.stores, self.balancer))
        self._count("success")
        return self.state

    async def reload(self, force: bool = False) -> bool:
        """Re-read the file; swap in the new state if it changed and is valid.

        Returns True when a new config took effect. A broken file never does: the last good
        state keeps serving and the failure is kept for the status page and counted.
        ``force`` (SIGHUP) rebuilds even from unchanged bytes.
        """
        async with self._lock:
            try:
                raw = await asyncio.to_thread(read_config, self.config_path)
            except ConfigError as exc:
                return self._fail(str(exc), "")
            digest = config_hash(raw)
            if not force and self._unchanged(digest):
                return False
            try:
                loaded = await asyncio.to_thread(load_config, self.config_path, None, raw)
            except ConfigError as exc:
                return self._fail(str(exc), digest)
            return self._apply(loaded, digest, keep_pools=not force)

    def _unchanged(self, digest: str) -> bool:
        """Whether ``digest`` needs no rebuild: the config being served (a reverted broken
        edit heals here) or the same broken bytes, already reported."""
        current = self._state
        if current is not None and digest == current.loaded.sha256:
            if self.last_failure is not None:
                self.last_failure, self._failed_hash = None, ""
                self._count("success")
                log.warning("%s is back to the config being served (sha256 %s)", self.config_path, digest[:12])
            return True
        return digest == self._failed_hash

    def _apply(self, loaded: LoadedConfig, digest: str, keep_pools: bool = True) -> bool:
        """Swap in ``loaded``. Key pools keep the standing of unchanged keys, except on a forced
        reload (SIGHUP), which starts every key afresh (e.g. after an account was fixed)."""
        # Read the state again: discovery may have swapped one in while the file was parsed.
        current = self._state
        try:
            discovered = self._carry_discovered(current, loaded.config) if current else {}
            previous = current.providers if current is not None and keep_pools else None
            new = build_state(loaded, discovered, self.connector, self.stores, self.balancer, previous)
        except Exception as exc:  # a reload must never take the watcher down
            log.exception("building the state for %s failed", self.config_path)
            # Only the type: an exception's text may hold a value from the file.
            return self._fail(f"cannot build the new state ({exc.__class__.__name__}); see the log", digest)
        self._swap(new)
        self.last_failure, self._failed_hash = None, ""
        self._count("success")
        if current is not None:
            _warn_start_only(current.config, loaded.config)
        log.warning("config reloaded from %s (sha256 %s, %d models)", self.config_path, loaded.sha256[:12],
                    len(new.routing.entries))
        return True

    def _carry_discovered(self, current: GatewayState, config: GatewayConfig) -> dict[str, tuple[str, ...]]:
        """Keep the last upstream lists of discovering providers whose ``base_url`` is unchanged
        (the filters apply when the table is built), so a reload does not make discovered
        models vanish until the next poll."""
        out = {}
        for p in config.providers:
            old = next((o for o in current.config.providers if o.name == p.name), None)
            if (old and p.discover.enabled and old.base_url == p.base_url and old.api_key == p.api_key
                    and old.api_keys == p.api_keys and old.proxy == p.proxy and p.name in current.discovered):
                out[p.name] = current.discovered[p.name]
        return out

    def apply_discovery(self, provider: str, models: tuple[str, ...]) -> bool:
        """Swap in a state whose routing includes ``provider``'s newly discovered models."""
        current = self.state
        if provider not in current.providers.providers or current.discovered.get(provider) == models:
            return False
        discovered = {**current.discovered, provider: models}
        try:
            routing = build_routing(current.config, discovered)
        except RoutingError as exc:  # cannot happen for a config that loaded; never swap a bad table
            log.error("discovered models of %s conflict: %s", provider, exc)
            return False
        for place, message in set(routing.conflicts) - set(current.routing.conflicts):
            log.warning("discovery for %s: %s: %s", provider, place, message)
        self._swap(replace(current, routing=routing, discovered=discovered))
        return True

    def _fail(self, message: str, digest: str) -> bool:
        self._failed_hash = digest
        self.last_failure = ReloadFailure(time.time(), message)
        self._count("failure")
        log.error("config reload of %s failed, still serving the last good config: %s", self.config_path, message)
        return False

    def _count(self, result: str) -> None:
        self.reloads[result] += 1
        metrics.child(metrics.RELOADS, result).inc()
        if result == "success":
            metrics.LAST_RELOAD.set(time.time())

    async def aclose(self) -> None:
        if self._state is not None:
            await self._state.providers.aclose()
        await self.stores.aclose()
