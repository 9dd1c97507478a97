"""Route strategies and circuit breakers: in which order a route tries its targets.

:func:`order` is pure: given the route's strategy, weights and each target's
:class:`TargetStats`, it returns the target indexes in the order to try them (every strategy
still falls over to the next one before the first byte):

- ``fallback``: config order;
- ``weighted``: a weighted random order (Efraimidis-Spirakis), so the first choice follows the
  weights and the rest stay available for fall-over;
- ``least_busy``: fewest requests in flight first, ties at random;
- ``latency``: power of two choices over a peak-EWMA of time to answer (the provider's answer
  arriving: a stream's response headers, or the whole JSON answer) times the requests
  in flight (Finagle, Linkerd), then the rest by that cost.

A :class:`CircuitBreaker` guards each target of a route: ``failures`` consecutive failures open
it, an open circuit is skipped for ``pause``, then one probe request is let through (half-open)
whose success closes it and whose failure opens it again.

:class:`Balancer` keeps the live figures per (route, target) across config reloads.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from vte_proxy.config import Breaker

# Decay time (seconds) of the latency estimate: how fast it follows a target getting faster,
# and how fast an idle target's estimate ages, so a recovered target is tried again.
DECAY = 10.0
# The cost of a target with requests in flight but no latency observed yet (Finagle's penalty).
PENALTY = 1e6

BreakerState = Literal["closed", "open", "half_open"]
BREAKER_STATES: tuple[BreakerState, ...] = ("closed", "open", "half_open")


@dataclass
class TargetStats:
    """Requests in flight and a peak-EWMA of time to first byte, for one target of a route."""

    in_flight: int = 0
    ewma: float = 0.0
    stamp: float = 0.0
    observed: bool = False

    def observe(self, seconds: float, now: float) -> None:
        """Fold in one time to first byte: a peak is taken at once, a drop decays in."""
        if not self.observed or seconds > self.ewma:
            self.ewma = seconds
        else:
            w = math.exp(-max(now - self.stamp, 0.0) / DECAY)
            self.ewma = self.ewma * w + seconds * (1 - w)
        self.stamp, self.observed = now, True

    def cost(self, now: float) -> float:
        """Expected wait: the (aged) latency estimate times the requests it would queue behind."""
        if not self.observed:
            return PENALTY if self.in_flight else 0.0
        aged = self.ewma * math.exp(-max(now - self.stamp, 0.0) / DECAY)
        return aged * (self.in_flight + 1)


def order(strategy: str, weights: Sequence[float], stats: Sequence[TargetStats], rng: random.Random,
          now: float) -> list[int]:
    """The indexes of a route's targets in the order to try them under ``strategy``."""
    n = len(stats)
    if strategy == "weighted":
        # u ** (1 / w) sorted high to low is a weighted sample without replacement.
        w = [weights[i] if i < len(weights) else 1.0 for i in range(n)]
        return sorted(range(n), key=lambda i: rng.random() ** (1.0 / w[i]), reverse=True)
    if strategy == "least_busy":
        shuffled = rng.sample(range(n), n)
        return sorted(shuffled, key=lambda i: stats[i].in_flight)
    if strategy == "latency":
        return _two_choices(stats, rng, now)
    return list(range(n))


def _two_choices(stats: Sequence[TargetStats], rng: random.Random, now: float) -> list[int]:
    """Power of two choices on cost for the first target; the rest by cost for fall-over."""
    n = len(stats)
    costs = [s.cost(now) for s in stats]
    if n < 2:
        return list(range(n))
    a, b = rng.sample(range(n), 2)
    first = a if costs[a] <= costs[b] else b
    rest = sorted((i for i in range(n) if i != first), key=lambda i: costs[i])
    return [first, *rest]


class CircuitBreaker:
    """Closed -> (``failures`` in a row) open -> (after ``pause``) half-open: one probe ->
    closed on success, open again on failure. ``failures`` = 0 never opens."""

    def __init__(self, failures: int, pause: float, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[BreakerState], None] | None = None) -> None:
        self.failures, self.pause = failures, pause
        self._clock = clock
        self._on_change = on_change
        self._state: BreakerState = "closed"
        self.consecutive = 0
        self.opened_at = 0.0
        self._probe_at: float | None = None

    @property
    def state(self) -> BreakerState:
        return self._state

    @state.setter
    def state(self, value: BreakerState) -> None:
        changed, self._state = value != self._state, value
        if changed and self._on_change is not None:
            self._on_change(value)

    def allow(self) -> bool:
        """Whether a request may go to the target now; in half-open, the caller is the probe."""
        if self.state == "closed":
            return True
        now = self._clock()
        if self.state == "open" and now - self.opened_at < self.pause:
            return False
        # The pause is over, or a probe never reported (its request was abandoned): probe again.
        if self.state == "half_open" and self._probe_at is not None and now - self._probe_at < self.pause:
            return False
        self.state, self._probe_at = "half_open", now
        return True

    def success(self) -> None:
        self.state, self.consecutive, self._probe_at = "closed", 0, None

    def failure(self) -> None:
        self.consecutive += 1
        if self.state == "half_open" or (self.failures and self.consecutive >= self.failures):
            self.state, self.opened_at, self._probe_at = "open", self._clock(), None

    def retry_after(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when it would now)."""
        if self.state != "open":
            return 0.0
        return max(self.pause - (self._clock() - self.opened_at), 0.0)


@dataclass
class Slot:
    """The live figures of one target of one route."""

    stats: TargetStats = field(default_factory=TargetStats)
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(0, 1.0))


class Balancer:
    """Per (route, target) figures that outlive a config reload (keyed by names), and the one
    random source of the strategies."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 on_change: Callable[[str, str, BreakerState], None] | None = None) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_change = on_change  # (route, target, state) of every breaker, for metrics
        self._slots: dict[tuple[str, str], Slot] = {}

    def slot(self, route: str, target: str, breaker: Breaker | None = None) -> Slot:
        """The slot of ``target`` in ``route``; a changed breaker config starts a new breaker."""
        slot = self._slots.get((route, target))
        if slot is None:
            slot = self._slots[(route, target)] = Slot(breaker=self._breaker(route, target, breaker))
        elif breaker is not None and (slot.breaker.failures, slot.breaker.pause) != (breaker.failures, breaker.pause):
            slot.breaker = self._breaker(route, target, breaker)
        return slot

    def _breaker(self, route: str, target: str, config: Breaker | None) -> CircuitBreaker:
        hook = self.on_change
        report = None if hook is None else (lambda state: hook(route, target, state))
        failures, pause = (config.failures, config.pause) if config else (0, 1.0)
        if report is not None:
            report("closed")
        return CircuitBreaker(failures, pause, self.clock, report)

    def order(self, route: str, strategy: str, targets: Sequence[str], weights: Sequence[float],
              breaker: Breaker | None = None) -> list[int]:
        """The order in which ``route`` tries ``targets`` for this request."""
        stats = [self.slot(route, t, breaker).stats for t in targets]
        return order(strategy, weights, stats, self.rng, self.clock())

    def keep(self, routes: Iterable[tuple[str, str]]) -> None:
        """Forget the slots of (route, target) pairs no longer in the config."""
        wanted = set(routes)
        for k in [k for k in self._slots if k not in wanted]:
            del self._slots[k]

    def breakers(self) -> dict[tuple[str, str], CircuitBreaker]:
        """Every (route, target) breaker, for metrics and the status page."""
        return {k: s.breaker for k, s in self._slots.items()}

    def slots(self) -> dict[tuple[str, str], Slot]:
        return dict(self._slots)
