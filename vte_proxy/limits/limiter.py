"""The limits policy: which limits apply to a request, admitting it, settling it.

The pipeline calls :meth:`Limiter.admit` before any provider call, with the key's name and
the first target (exposed model, provider); it raises :class:`LimitExceeded` (429) or returns
a :class:`Ticket`. Everything that applies (key, gateway, the target's model rule and
provider, the key's budget) is checked and reserved in ONE store call. On fall-over to another
target the pipeline calls :meth:`Ticket.attempt`; when the exchange ends (answered, failed,
client gone) it calls :meth:`Ticket.settle` with the real usage, exactly once in effect.

Scopes and their counters are named after config *names* (``k:team-a``, ``m:openai/gpt-4o``,
``p:openai``, ``g``), so a reload keeps running windows (a changed limit applies to them at
once) and never resets spend. Model rules and provider limits belong to the target that is
being tried: a target whose model or provider is full raises a :class:`LimitExceeded` whose
``target_scope`` is true, and the pipeline may try the next target instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from typing import Any, Protocol

from vte_proxy.config import GatewayConfig, KeyConfig
from vte_proxy.config_limits import LimitSet
from vte_proxy.errors import GatewayError
from vte_proxy.limits.estimate import Estimate
from vte_proxy.limits.exceeded import LimitExceeded, limit_headers
from vte_proxy.limits.pricing import NANO, PriceBook
from vte_proxy.limits.store import Check, Kind, Store, StoreError
from vte_proxy.limits.ticket import Target, Ticket
from vte_proxy.limits.windows import budget_period, format_reset, minute_window, seconds_up

log = logging.getLogger("vte_proxy.limits")

# Retry-After of a request refused for concurrency: a slot frees when any request ends.
CONCURRENCY_RETRY_MS = 1000
_WORDS = {"requests": "requests per minute", "tokens": "tokens per minute", "concurrency": "concurrent requests"}


def wall_ms() -> int:
    """Milliseconds since the epoch: every replica cuts the same windows (clocks kept by NTP)."""
    return time.time_ns() // 1_000_000


def limits_in_use(config: GatewayConfig) -> bool:
    """Whether anything is limited or budgeted (if not, requests never touch the store)."""
    return bool(config.limits.given() or config.limits.rules or any(p.limits.given() for p in config.providers)
                or any(k.limits.given() or k.budget for k in config.keys))


class Observer(Protocol):
    """Where the limiter reports what metrics count (:class:`~vte_proxy.limits.observe.LimitMetrics`)."""

    def refused(self, key: str, scope: str, kind: str) -> None:
        """A request refused with 429 (vte_rate_limited_total)."""

    def store_error(self, store: str) -> None:
        """A store call failed (vte_limits_store_errors_total)."""

    def spent(self, key: str, model: str, provider: str, usd: float) -> None:
        """One exchange's priced usage (vte_cost_usd_total)."""

    def budget(self, key: str, usd: float) -> None:
        """A budgeted key's spend in its current period, as the store counts it (vte_budget_spent_usd)."""


class _Quiet:
    def refused(self, key: str, scope: str, kind: str) -> None:
        return None

    def store_error(self, store: str) -> None:
        return None

    def spent(self, key: str, model: str, provider: str, usd: float) -> None:
        return None

    def budget(self, key: str, usd: float) -> None:
        return None



# One limit of one scope, ready to become a Check: kind, scope, counter name (a window's id is
# appended for requests and tokens), limit.
_Spec = tuple[Kind, str, str, int]


def _specs(scope: str, name: str, limits: LimitSet | None) -> list[_Spec]:
    if limits is None:
        return []
    out: list[_Spec] = []
    if limits.rpm is not None:
        out.append(("requests", scope, f"r:{name}:", limits.rpm))
    if limits.tpm is not None:
        out.append(("tokens", scope, f"t:{name}:", limits.tpm))
    if limits.concurrency is not None:
        out.append(("concurrency", scope, f"c:{name}", limits.concurrency))
    return out


class Limiter:
    """The limits of one config over a store that outlives it (the app owns the store)."""

    def __init__(self, config: GatewayConfig, store: Store, clock: Callable[[], int] = wall_ms,
                 observer: Observer | None = None) -> None:
        self.store = store
        self.clock = clock
        self.observer: Observer = observer or _Quiet()
        self.prices = PriceBook(config.prices)
        self._keys = {k.name: k for k in config.keys}
        self._providers = {p.name: p.limits for p in config.providers if p.limits.given()}
        self._rules = config.limits.rules
        self._rule_memo: dict[str, LimitSet | None] = {}
        # Per key and target, the limits that apply (memoised: the hot path only builds Checks).
        self._all_specs: dict[tuple[str, str, str], list[_Spec]] = {}
        self._gateway: LimitSet = LimitSet(rpm=config.limits.rpm, tpm=config.limits.tpm,
                                           concurrency=config.limits.concurrency)
        self._lease_ms = int(config.limits.lease * 1000)
        self._closed = config.limits.redis is not None and config.limits.redis.on_error == "closed"
        self._idle = not limits_in_use(config)

    def rule(self, model: str) -> LimitSet | None:
        """The first ``limits.rules`` entry whose name or glob matches the exposed model."""
        if model not in self._rule_memo:
            self._rule_memo[model] = next((r for r in self._rules if fnmatchcase(model, r.model)), None)
        return self._rule_memo[model]

    async def admit(self, key: str, targets: Sequence[tuple[str, str]], estimate: Estimate) -> Ticket:
        """Check and reserve every limit that applies to the first of ``targets`` (exposed
        model, provider) that has room, in one store call each (one in the common case); the
        429 of the last target when none has room, or at once when the key or gateway is full."""
        for i, (model, provider) in enumerate(targets):
            try:
                return await self._admit(key, model, provider, estimate)
            except LimitExceeded as exc:
                if not exc.target_scope or i == len(targets) - 1:
                    raise self.counted(key, exc) from None
        raise GatewayError(503, "no target to admit the request to", code="no_target")

    def counted(self, key: str, exc: LimitExceeded) -> LimitExceeded:
        """``exc``, counted in vte_rate_limited_total: call it for the refusal the client gets
        (a target skipped for one with room is not a refused request)."""
        self.observer.refused(key, exc.scope, exc.kind)
        return exc

    async def _admit(self, key: str, model: str, provider: str, estimate: Estimate) -> Ticket:
        ticket = Ticket(self, key, estimate)
        ticket.target = target = Target(model, provider)
        if self._idle:  # nothing limited: no store call; the settle still prices the usage
            return ticket
        key_cfg = self._keys.get(key)
        if key_cfg is not None and key_cfg.budget is not None and self.prices.price(model) is None:
            raise GatewayError(403, f"model {model} has no price and key {key} has a budget",
                               code="model_not_priced")
        now = self.clock()
        specs = self._all_specs.get((key, model, provider))
        if specs is None:
            specs = self._all_specs[(key, model, provider)] = self._key_specs_of(key_cfg) + self._target_specs_of(
                model, provider)
        checks = self._build(specs, estimate, now)
        budget = self.budget_check(key, now) if key_cfg is not None and key_cfg.budget is not None else None
        if budget is not None:
            checks.append(budget)
        await ticket.hold(checks, target, now)
        return ticket

    def _key_specs_of(self, key: KeyConfig | None) -> list[_Spec]:
        return [*(_specs("key", f"k:{key.name}", key.limits) if key else []), *_specs("gateway", "g", self._gateway)]

    def _target_specs_of(self, model: str, provider: str) -> list[_Spec]:
        return [*_specs("model", f"m:{model}", self.rule(model)), *_specs("provider", f"p:{provider}",
                                                                          self._providers.get(provider))]

    def _key_checks(self, key: KeyConfig | None, estimate: Estimate, now: int) -> list[Check]:
        checks = self._build(self._key_specs_of(key), estimate, now)
        budget = self.budget_check(key.name, now) if key is not None else None
        return [*checks, budget] if budget is not None else checks

    def _target_checks(self, model: str, provider: str, estimate: Estimate, now: int) -> list[Check]:
        return self._build(self._target_specs_of(model, provider), estimate, now)

    def _build(self, specs: list[_Spec], estimate: Estimate, now: int) -> list[Check]:
        if not specs:
            return []
        window = minute_window(now)
        wid = str(window.id)
        out = []
        for kind, scope, name, limit in specs:
            if kind == "concurrency":
                out.append(Check("concurrency", scope, name, limit, 1, self._lease_ms))
            else:
                amount = 1 if kind == "requests" else estimate.total
                out.append(Check(kind, scope, name + wid, limit, amount, window.reset_ms))
        return out

    def refusal(self, key: str, check: Check) -> LimitExceeded:
        """The 429 for a check that did not pass (not counted yet: see :meth:`counted`)."""
        who = {"key": f"key {key}", "gateway": "the gateway"}.get(check.scope) or f"{check.scope} {_owner(check)}"
        if check.kind == "budget":
            cfg = self._keys[key].budget
            assert cfg is not None
            period = "in total" if cfg.period == "total" else f"this {cfg.period}"
            return LimitExceeded(check.scope, "budget", f"Budget of {who} ({cfg.usd:g} USD {period}) is used up.",
                                 check.ttl_ms or None, {})
        retry = CONCURRENCY_RETRY_MS if check.kind == "concurrency" else check.ttl_ms
        headers = limit_headers([check], [check.limit])
        return LimitExceeded(check.scope, check.kind, f"Rate limit reached for {who}: {_WORDS[check.kind]} "
                             f"(limit {check.limit}). Retry after {seconds_up(retry)} s.", retry, headers)

    def store_failed(self, exc: StoreError) -> None:
        """``on_error``: ``open`` serves without limits (counted), ``closed`` answers 503."""
        self.observer.store_error(self.store.label)
        log.warning("limits store unavailable (%s); %s", exc, "refusing" if self._closed else "serving without limits")
        if self._closed:
            raise GatewayError(503, "The rate-limit store is unavailable; try again shortly.",
                               code="limits_unavailable", headers={"retry-after": "1"})

    def budget_check(self, key: str, now: int) -> Check | None:
        """The key's budget in the period that holds ``now`` (``ttl_ms``: until it ends, 0 for total)."""
        cfg = self._keys.get(key)
        if cfg is None or cfg.budget is None:
            return None
        period = budget_period(now, cfg.budget.period)
        return Check("budget", "key", f"s:{key}:{period.id}", round(cfg.budget.usd * NANO), 0, period.reset_ms or 0)

    async def key_usage(self, key: str) -> dict[str, Any]:
        """The key's own limits and budget against their current use, for the status page:
        ``{"requests": {"limit", "used", "resets_in"}, "tokens": ..., "concurrency": {"limit",
        "used"}, "budget": {"usd", "spent_usd", "period", "resets_in"}}`` (only what is set)."""
        now = self.clock()
        checks = self.key_checks(key, now)
        if not checks:
            return {}
        try:
            counts = await self.store.read(checks, now)
        except StoreError:
            self.observer.store_error(self.store.label)
            return {"error": "the limits store is unavailable"}
        return {c.kind: self._usage_row(key, c, n) for c, n in zip(checks, counts, strict=True)}

    def _usage_row(self, key: str, check: Check, count: int) -> dict[str, Any]:
        resets = {"resets_in": format_reset(check.ttl_ms)} if check.kind != "concurrency" and check.ttl_ms else {}
        if check.kind != "budget":
            return {"limit": check.limit, "used": count, **resets}
        budget = self._keys[key].budget
        assert budget is not None
        return {"usd": budget.usd, "spent_usd": round(count / NANO, 9), "period": budget.period, **resets}

    def key_checks(self, key: str, now: int) -> list[Check]:
        """The key's own checks (limits, budget) as of ``now``: what the status page reads."""
        return [c for c in self._key_checks(self._keys.get(key), Estimate(0, 0), now) if c.scope == "key"]


def _owner(check: Check) -> str:
    """The name inside a counter's name: ``r:m:openai/gpt-4o:123`` -> ``openai/gpt-4o``."""
    inner = check.name.split(":", 2)[2]
    return inner.rsplit(":", 1)[0] if check.kind in ("requests", "tokens") else inner

