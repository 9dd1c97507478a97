"""A provider's pool of upstream keys (``api_keys``): which key the next call uses.

Keys are picked at random by weight among the *ready* ones. A 429 *cools* a key down for
the upstream's ``Retry-After`` (or the provider's ``cooldown``); a 401/403 *disables* it
until the config changes (a reload builds a new pool). When no key is ready, :meth:`pick`
returns None and :meth:`retry_after` says when the first cooling key is ready again.

Pure bookkeeping: no I/O, an injectable clock and random source, and the state of every key
by its name for metrics and the status page. The key values never leave :class:`PoolKey`.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

KeyState = Literal["ready", "cooling", "disabled"]
STATES: tuple[KeyState, ...] = ("ready", "cooling", "disabled")
# A Retry-After beyond this is taken as this: a typo upstream must not park a key for a year.
MAX_COOLDOWN = 24 * 3600.0


@dataclass(eq=False)
class PoolKey:
    """One upstream key: its config name, secret value, weight and current standing."""

    name: str
    secret: str
    weight: float = 1.0
    cooling_until: float = 0.0
    disabled: bool = False

    def __repr__(self) -> str:  # never the secret, even in a traceback
        return f"PoolKey({self.name!r})"

    def state(self, now: float) -> KeyState:
        if self.disabled:
            return "disabled"
        return "cooling" if now < self.cooling_until else "ready"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_COOLDOWN)


class KeyPool:
    """The keys of one provider and their standing; see the module docstring."""

    def __init__(self, keys: Iterable[PoolKey], cooldown: float, *, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.keys = list(keys)
        if not self.keys:
            raise ValueError("a key pool needs at least one key")
        self.cooldown = cooldown
        self._clock = clock
        self._rng = rng or random.Random()
        self._by_name = {k.name: k for k in self.keys}

    def adopt(self, old: KeyPool) -> None:
        """Take over the standing of ``old``'s keys that are still here with the same value
        (a reload that did not touch them must not bring back a rejected key, or cut a rest
        short); a key whose value changed starts ready."""
        for k in self.keys:
            before = old._by_name.get(k.name)
            if before is not None and before.secret == k.secret:
                k.cooling_until, k.disabled = before.cooling_until, before.disabled

    def key(self, name: str) -> PoolKey:
        return self._by_name[name]

    def ready(self, exclude: Iterable[str] = ()) -> list[PoolKey]:
        now, skip = self._clock(), set(exclude)
        return [k for k in self.keys if k.name not in skip and k.state(now) == "ready"]

    def pick(self, exclude: Iterable[str] = ()) -> PoolKey | None:
        """A ready key (not in ``exclude``: the keys this request already tried), by weight."""
        ready = self.ready(exclude)
        if len(ready) <= 1:
            return ready[0] if ready else None
        point = self._rng.random() * sum(k.weight for k in ready)
        for key in ready:  # by hand: random.choices builds two lists per call, this is the hot path
            point -= key.weight
            if point < 0:
                return key
        return ready[-1]

    def cool(self, name: str, retry_after: float | None = None) -> float:
        """A 429: rest the key for ``retry_after`` seconds (or the pool's cooldown); returns it."""
        seconds = self.cooldown if retry_after is None else min(retry_after, MAX_COOLDOWN)
        key = self._by_name[name]
        key.cooling_until = max(key.cooling_until, self._clock() + seconds)
        return seconds

    def disable(self, name: str) -> None:
        """A 401/403: the upstream rejects this key; it stays out until the config changes."""
        self._by_name[name].disabled = True

    def retry_after(self) -> float | None:
        """Seconds until the first cooling key is ready again; None when none is cooling."""
        now = self._clock()
        waits = [k.cooling_until - now for k in self.keys if k.state(now) == "cooling"]
        return max(min(waits), 0.0) if waits else None

    def states(self) -> dict[str, KeyState]:
        """Every key's state by name (for metrics and the status page)."""
        now = self._clock()
        return {k.name: k.state(now) for k in self.keys}

    def seconds_left(self) -> dict[str, float]:
        """Cooling keys: seconds until each is ready again (for the status page)."""
        now = self._clock()
        return {k.name: round(k.cooling_until - now, 1) for k in self.keys if k.state(now) == "cooling"}
