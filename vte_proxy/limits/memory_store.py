"""The ``memory`` store: the counters in this process's memory, exact within one process.

Every method runs to completion without awaiting, so on one event loop a reserve is atomic.
Several workers or replicas each count on their own (the limits multiply): use ``redis``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from vte_proxy.limits.store import Check, Op, Verdict

# Expired counters are dropped every this many operations, so memory stays bounded.
SWEEP_EVERY = 4096


@dataclass
class _Counter:
    value: int
    expires: int


@dataclass
class _Spend:
    fields: dict[str, int] = field(default_factory=dict)
    expires: int = 0  # 0: never


class MemoryStore:
    """Counters, lease sets and spend hashes in dictionaries, with the Redis store's semantics."""

    label = "memory"

    def __init__(self) -> None:
        self._counters: dict[str, _Counter] = {}
        # Concurrency leases by name, member -> expiry, in expiry order (one lease time for all):
        # the expired ones are at the front, so counting never scans the live ones.
        self._leases: dict[str, OrderedDict[str, int]] = {}
        self._spend: dict[str, _Spend] = {}
        self._ops = 0

    async def reserve(self, checks: Sequence[Check], lease: str, now_ms: int) -> Verdict:
        self._tick(now_ms)
        seen: list[int] = []
        for i, check in enumerate(checks):
            current = self._current(check, now_ms)
            if not _passes(check, current):
                return Verdict(False, tuple(seen), i)
            seen.append(current)
        return Verdict(True, tuple(self._take(c, cur, lease, now_ms) for c, cur in zip(checks, seen, strict=True)))

    async def apply(self, ops: Sequence[Op], now_ms: int) -> int | None:
        self._tick(now_ms)
        spent = None
        for op in ops:
            if op.kind == "add":
                self._add(op, now_ms)
            elif op.kind == "release":
                leases = self._leases.get(op.name)
                if leases is not None:
                    leases.pop(op.member, None)
            else:
                spent = self._add_spend(op, now_ms)
        return spent

    async def read(self, checks: Sequence[Check], now_ms: int) -> list[int]:
        return [self._current(c, now_ms) for c in checks]

    async def spend_by_model(self, name: str) -> dict[str, int]:
        spend = self._spend.get(name)
        return {k: v for k, v in spend.fields.items() if k != "total"} if spend else {}

    async def aclose(self) -> None:
        return None

    def _current(self, check: Check, now_ms: int) -> int:
        if check.kind == "concurrency":
            leases = self._leases.get(check.name)
            if not leases:
                return 0
            while leases and next(iter(leases.values())) <= now_ms:
                leases.popitem(last=False)
            if len(leases) >= check.limit:  # the order may be off after a reload changed the lease time
                for member in [m for m, exp in leases.items() if exp <= now_ms]:
                    del leases[member]
            return len(leases)
        if check.kind == "budget":
            spend = self._spend.get(check.name)
            return spend.fields.get("total", 0) if spend and _alive(spend.expires, now_ms) else 0
        counter = self._counters.get(check.name)
        return counter.value if counter and counter.expires > now_ms else 0

    def _take(self, check: Check, current: int, lease: str, now_ms: int) -> int:
        if check.kind == "concurrency":
            leases = self._leases.setdefault(check.name, OrderedDict())
            leases[lease] = now_ms + check.ttl_ms
            leases.move_to_end(lease)
            return current + 1
        if check.kind == "budget":
            return current
        self._counters[check.name] = _Counter(current + check.amount, now_ms + check.ttl_ms)
        return current + check.amount

    def _add(self, op: Op, now_ms: int) -> None:
        counter = self._counters.get(op.name)
        alive = counter is not None and counter.expires > now_ms
        if op.value < 0:
            if alive and counter is not None:
                counter.value = max(0, counter.value + op.value)
            return
        self._counters[op.name] = _Counter((counter.value if alive and counter else 0) + op.value,
                                           now_ms + op.ttl_ms)

    def _add_spend(self, op: Op, now_ms: int) -> int:
        spend = self._spend.get(op.name)
        if spend is None or not _alive(spend.expires, now_ms):
            spend = self._spend[op.name] = _Spend()
        for name in ("total", op.member):
            spend.fields[name] = spend.fields.get(name, 0) + op.value
        spend.expires = now_ms + op.ttl_ms if op.ttl_ms else 0
        return spend.fields["total"]

    def _tick(self, now_ms: int) -> None:
        self._ops += 1
        if self._ops % SWEEP_EVERY == 0:
            self.sweep(now_ms)

    def sweep(self, now_ms: int) -> None:
        """Drop what has expired (windows past, leases of lost requests, spend of past periods)."""
        self._counters = {k: c for k, c in self._counters.items() if c.expires > now_ms}
        leases = ((k, OrderedDict((m, e) for m, e in v.items() if e > now_ms)) for k, v in self._leases.items())
        self._leases = {k: kept for k, kept in leases if kept}
        self._spend = {k: s for k, s in self._spend.items() if _alive(s.expires, now_ms)}


def _alive(expires: int, now_ms: int) -> bool:
    return expires == 0 or expires > now_ms


def _passes(check: Check, current: int) -> bool:
    """The rule both stores apply (the Lua script in redis_store.py says the same)."""
    if check.kind == "concurrency":
        return current + 1 <= check.limit
    if check.kind == "budget":
        return current < check.limit
    if check.kind == "tokens":
        return current + check.amount <= check.limit or current == 0
    return current + check.amount <= check.limit
