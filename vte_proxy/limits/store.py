"""What a counter store does, independent of where the counters live.

A store knows nothing of keys, models or prices: it evaluates a list of :class:`Check`
atomically (all pass and are reserved, or none is) and applies a list of :class:`Op` when an
exchange ends. Counter names are built by the limiter from config *names* (never from config
identity), so a reload keeps every running window and all spend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, Protocol

Kind = Literal["requests", "tokens", "concurrency", "budget"]
OpKind = Literal["add", "release", "spend"]


class Check(NamedTuple):
    """One limit to check and reserve.

    ``requests``/``tokens``: the counter ``name`` (one per window) may grow by ``amount`` up to
    ``limit``; it expires after ``ttl_ms``. A ``tokens`` check also passes when its window is
    still empty, so a request larger than the whole limit is not refused forever.
    ``concurrency``: at most ``limit`` leases in the set ``name``; a lease lives ``ttl_ms``
    (freed early by its ``release``) so a replica that dies does not hold slots forever.
    ``budget``: the spend hash ``name`` must be under ``limit`` nano-USD; nothing is reserved.
    ``scope`` (key / model / provider / gateway) is for the caller; stores ignore it.
    """

    kind: Kind
    scope: str
    name: str
    limit: int
    amount: int
    ttl_ms: int


class Verdict(NamedTuple):
    """``ok``: every check passed and is reserved; ``used[i]`` is check i's count after it.
    Otherwise ``failed`` is the index of the first check that did not pass (``used`` then
    holds the counts seen up to it) and nothing was changed."""

    ok: bool
    used: tuple[int, ...]
    failed: int = -1


class Op(NamedTuple):
    """A change when an exchange ends.

    ``add``: counter ``name`` += ``value`` (a negative value, a refund, only touches a counter
    that still exists and never takes it below 0), expiring after ``ttl_ms``.
    ``release``: remove lease ``member`` from the set ``name``.
    ``spend``: in the hash ``name`` add ``value`` to the fields ``total`` and ``member`` (the
    model); expire after ``ttl_ms`` (0: never, for ``total`` budgets).
    """

    kind: OpKind
    name: str
    value: int = 0
    ttl_ms: int = 0
    member: str = ""


class StoreError(Exception):
    """The store could not answer (down, timed out); the limiter applies ``on_error``."""


class Store(Protocol):
    """Where the counters live: :class:`~vte_proxy.limits.memory_store.MemoryStore` or
    :class:`~vte_proxy.limits.redis_store.RedisStore`."""

    label: str  # the vte_limits_store_errors_total{store} value

    async def reserve(self, checks: Sequence[Check], lease: str, now_ms: int) -> Verdict:
        """Check every limit and reserve them all, or none, atomically (one round trip)."""
        ...

    async def apply(self, ops: Sequence[Op], now_ms: int) -> int | None:
        """Apply the ops of one settle atomically (one round trip); the spend total after a
        ``spend`` op (nano-USD), else ``None``."""
        ...

    async def read(self, checks: Sequence[Check], now_ms: int) -> list[int]:
        """The current count of each check's counter (spend: the ``total``), for the status page."""
        ...

    async def spend_by_model(self, name: str) -> dict[str, int]:
        """The per-model fields of a spend hash (nano-USD), for the status page."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
