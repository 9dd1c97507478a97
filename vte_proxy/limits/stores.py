"""The app's counter stores: built from ``limits`` and kept across reloads.

Counters must outlive a config (a reload keeps running windows and spend), so the app owns
one :class:`Stores` and each config's :class:`~vte_proxy.limits.limiter.Limiter` borrows the
store its ``limits`` name. A reload that changes nothing about the store gets the same object;
one that points elsewhere gets a new one (the old one is closed at shutdown, since tickets of
in-flight requests may still settle on it).
"""

from __future__ import annotations

from vte_proxy.config_limits import LimitsConfig
from vte_proxy.limits.memory_store import MemoryStore
from vte_proxy.limits.store import Store


class Stores:
    """One memory store for the process, and the redis store of the current settings."""

    def __init__(self) -> None:
        self.memory = MemoryStore()
        self._redis: dict[tuple[str, str, float], Store] = {}

    def get(self, limits: LimitsConfig) -> Store:
        """The store ``limits`` asks for; the same object for the same settings."""
        if limits.store == "memory" or limits.redis is None:
            return self.memory
        r = limits.redis
        settings = (r.url.get_secret_value(), r.prefix, r.timeout)
        if settings not in self._redis:
            from vte_proxy.limits.redis_store import RedisStore  # redis-py is imported only when used

            self._redis[settings] = RedisStore(r.url.get_secret_value(), r.prefix, r.timeout)
        return self._redis[settings]

    async def aclose(self) -> None:
        for store in self._redis.values():
            await store.aclose()
        self._redis.clear()
