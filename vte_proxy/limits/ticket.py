"""One admitted request's reservations: hold, fall-over (attempt), settle, headers.

:meth:`~vte_proxy.limits.limiter.Limiter.admit` returns a :class:`Ticket` holding what it
reserved; the pipeline moves it to another target on fall-over (:meth:`Ticket.attempt`) and
settles it once with the real usage (tokens corrected, concurrency released, spend added to
the key's budget).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from vte_proxy.limits.estimate import Estimate
from vte_proxy.limits.exceeded import LimitExceeded, limit_headers
from vte_proxy.limits.pricing import NANO, Usage
from vte_proxy.limits.store import Check, Op, StoreError, Verdict
from vte_proxy.limits.windows import Window, minute_window

if TYPE_CHECKING:
    from vte_proxy.limits.limiter import Limiter

log = logging.getLogger("vte_proxy.limits")

# Lease ids: unique across processes and replicas (a random prefix per process), cheap per request.
_LEASES = os.urandom(6).hex() + ":"
_lease_numbers = itertools.count()


class Target(NamedTuple):
    model: str
    provider: str



class Ticket:
    """One admitted request's reservations; settle it once when the exchange ends.

    Its ``target`` is the one admitted; :meth:`attempt` moves it (fall-over) and raises an
    uncounted :class:`LimitExceeded` when the new target is full (the caller counts the one it
    answers with, through :meth:`Limiter.counted`)."""

    def __init__(self, limiter: Limiter, key: str, estimate: Estimate) -> None:
        self.limiter = limiter
        self.key = key
        self.estimate = estimate
        self.id = ""  # the lease id, drawn when something is reserved (not on the unlimited path)
        self.checks: list[Check] = []
        self.used: list[int] = []
        self.target: Target | None = None
        self.settled = False

    def headers(self) -> dict[str, str]:
        """``x-ratelimit-*`` for the tightest requests and tokens limits that applied."""
        return limit_headers(self.checks, self.used)

    async def hold(self, checks: list[Check], target: Target, now: int) -> None:
        """Reserve ``checks`` in one store call and move to ``target``, or raise the refusal of
        the first check that is full (the ticket then holds no target until the next success)."""
        self.target = None
        if checks:
            self.id = self.id or f"{_LEASES}{next(_lease_numbers)}"
            try:
                verdict: Verdict = await self.limiter.store.reserve(checks, self.id, now)
            except StoreError as exc:
                self.limiter.store_failed(exc)
                verdict = Verdict(True, ())
                checks = []
            if not verdict.ok:
                raise self.limiter.refusal(self.key, checks[verdict.failed])
            self.checks.extend(checks)
            self.used.extend(verdict.used)
        self.target = target

    def holds(self, model: str, provider: str) -> bool:
        """Whether the ticket's reservations are for this target (the one admitted, or moved to)."""
        return self.target == Target(model, provider)

    async def attempt(self, model: str, provider: str) -> None:
        """Fall-over to another target: reserve its model and provider limits, then give back the
        previous target's concurrency and tokens (its request stays counted: it was sent). A
        full target raises LimitExceeded and leaves the ticket as it was."""
        target = Target(model, provider)
        if target == self.target or self.settled:
            return
        now = self.limiter.clock()
        saved = self.checks, self.used, self.target
        pairs = list(zip(self.checks, self.used, strict=True))
        previous = [c for c, _ in pairs if c.scope in ("model", "provider")]
        fresh = list(self.limiter._target_checks(model, provider, self.estimate, now))
        self.checks = [c for c, _ in pairs if c.scope not in ("model", "provider")]
        self.used = [u for c, u in pairs if c.scope not in ("model", "provider")]
        try:
            await self.hold(fresh, target, now)
        except LimitExceeded:
            # A full target is skipped: the ticket keeps what it held (nothing given back yet).
            self.checks, self.used, self.target = saved
            raise
        await self._apply(self._give_back(previous, None, now), now)

    async def settle(self, usage: Usage | None) -> None:
        """End of the exchange: tokens settled to ``usage`` (``None``: nothing was used, all
        refunded), concurrency released, spend added to the key's budget. Runs once; never raises."""
        if self.settled:
            return
        self.settled = True
        if not (self.checks or self.limiter.prices):  # nothing held, nothing priced
            return
        now = self.limiter.clock()
        ops = self._give_back(self.checks, usage, now)
        spend = self._spend(usage, now)
        if spend is not None:
            ops.append(spend)
        total = await self._apply(ops, now)
        if total is not None:
            self.limiter.observer.budget(self.key, total / NANO)

    def estimated_usage(self) -> Usage:
        """The reservation as usage: what an answer that reported none is charged."""
        return Usage(self.estimate.prompt, self.estimate.completion)

    def cost_usd(self, usage: Usage) -> float:
        """What ``usage`` costs on the current target's model (0 when unpriced)."""
        model = self.target.model if self.target else ""
        return self.limiter.prices.cost_nano(model, usage) / NANO

    def _give_back(self, checks: Sequence[Check], usage: Usage | None, now: int) -> list[Op]:
        ops: list[Op] = []
        used = usage.total if usage is not None else 0
        for check in checks:
            if check.kind == "concurrency":
                ops.append(Op("release", check.name, member=self.id))
            elif check.kind == "tokens":
                ops.extend(_token_settle(check, used - check.amount, minute_window(now)))
        return ops

    def _spend(self, usage: Usage | None, now: int) -> Op | None:
        if usage is None or self.target is None:
            return None
        nano = self.limiter.prices.cost_nano(self.target.model, usage)
        if nano:
            self.limiter.observer.spent(self.key, self.target.model, self.target.provider, nano / NANO)
        check = self.limiter.budget_check(self.key, now)
        if check is None:
            return None
        ttl = check.ttl_ms + 86_400_000 if check.ttl_ms else 0  # a day past the period, for the status page
        return Op("spend", check.name, nano, ttl, self.target.model) if nano else None

    async def _apply(self, ops: list[Op], now: int) -> int | None:
        if not ops:
            return None
        try:
            return await self.limiter.store.apply(ops, now)
        except StoreError as exc:
            self.limiter.observer.store_error(self.limiter.store.label)
            log.warning("limits store unavailable at settle (%s): this request's usage is not counted", exc)
            return None


def _token_settle(check: Check, delta: int, window: Window) -> list[Op]:
    """Correct a token reservation by ``delta``: in its own window while it runs; once that
    window is over, only an excess is carried into the current one (a refund has nowhere to go)."""
    prefix, _, window_id = check.name.rpartition(":")
    if int(window_id) == window.id:
        return [Op("add", check.name, delta, window.reset_ms)] if delta else []
    return [Op("add", f"{prefix}:{window.id}", delta, window.reset_ms)] if delta > 0 else []
