"""The limits package in-process: window arithmetic (property tests), pricing, the token
estimate, and the limiter over the memory store with an injected clock."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from vte_proxy.config import GatewayConfig
from vte_proxy.config_limits import Price
from vte_proxy.errors import GatewayError
from vte_proxy.limits import Estimate, Limiter, LimitExceeded, PriceBook, Stores, Usage, estimate
from vte_proxy.limits.memory_store import MemoryStore
from vte_proxy.limits.store import Check, Op, StoreError, Verdict
from vte_proxy.limits.windows import MINUTE_MS, budget_period, format_reset, minute_window, seconds_up
from vte_proxy.loader import ConfigError, parse_config

# 2026-12-02 10:00:30 UTC: half a minute into a window.
T0 = int(datetime(2026, 12, 2, 10, 0, 30, tzinfo=UTC).timestamp() * 1000)
SMALL = Estimate(10, 10)
TIMES = st.integers(min_value=0, max_value=4_102_444_800_000)  # up to 2100


# --- window arithmetic -------------------------------------------------------------------

@given(TIMES, st.sampled_from([1000, MINUTE_MS, 3_600_000]))
def test_minute_window_covers_now_and_ends_on_a_boundary(now: int, size: int) -> None:
    w = minute_window(now, size)
    assert 0 < w.reset_ms <= size
    assert (now + w.reset_ms) % size == 0
    assert minute_window(now + w.reset_ms - 1, size).id == w.id
    assert minute_window(now + w.reset_ms, size).id == w.id + 1


@given(TIMES, st.sampled_from(["day", "week", "month"]))
def test_budget_period_rolls_over_exactly_at_its_end(now: int, kind: str) -> None:
    p = budget_period(now, kind)
    assert p.reset_ms is not None and 0 < p.reset_ms <= 31 * 86_400_000
    assert budget_period(now + p.reset_ms - 1, kind).id == p.id
    following = budget_period(now + p.reset_ms, kind)
    assert following.id > p.id  # ids sort in time order (ISO weeks: the year of their Monday)
    end = datetime.fromtimestamp((now + p.reset_ms) / 1000, UTC)
    assert (end.hour, end.minute, end.second) == (0, 0, 0)
    assert {"day": True, "week": end.weekday() == 0, "month": end.day == 1}[kind]


def test_budget_period_ids_and_total() -> None:
    assert budget_period(T0, "day").id == "2026-12-02"
    assert budget_period(T0, "week").id == "2026-W49"
    assert budget_period(T0, "month").id == "2026-12"
    assert budget_period(T0, "total").reset_ms is None
    end_of_year = int(datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp() * 1000)
    assert budget_period(end_of_year, "month").reset_ms == 60_000


@pytest.mark.parametrize(("ms", "text"), [(0, "0ms"), (20, "20ms"), (1000, "1s"), (1500, "1.5s"),
                                           (360_000, "6m0s"), (59_999, "59.999s"), (3_723_000, "1h2m3s")])
def test_format_reset_like_openai(ms: int, text: str) -> None:
    assert format_reset(ms) == text


@given(st.integers(min_value=0, max_value=10**9))
def test_format_reset_reads_back(ms: int) -> None:
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?(?:(\d+)ms)?", format_reset(ms))
    assert m is not None
    h, mi, s, msec = (float(g) if g else 0.0 for g in m.groups())
    assert round(h * 3_600_000 + mi * 60_000 + s * 1000 + msec) == ms
    assert seconds_up(ms) * 1000 >= ms and seconds_up(ms) >= 1


# --- pricing and the estimate ------------------------------------------------------------

def test_prices_exact_before_glob_and_cost_in_nano_usd() -> None:
    book = PriceBook({"openai/*": Price(input=1, output=2), "openai/gpt-4o": Price(input=2.5, output=10,
                                                                                   cached_input=1.25)})
    assert book.price("openai/gpt-4o") == Price(input=2.5, output=10, cached_input=1.25)
    assert book.price("openai/gpt-4o-mini") == Price(input=1, output=2)
    assert book.price("claude/x") is None
    # 1000 prompt (400 cached) + 500 completion on gpt-4o: 600*2.5 + 400*1.25 + 500*10 per 1M
    assert book.cost_nano("openai/gpt-4o", Usage(1000, 500, 400)) == 7_000_000
    assert book.cost_nano("openai/mini", Usage(1_000_000, 0)) == 1_000_000_000
    assert book.cost_nano("claude/x", Usage(10, 10)) == 0


def test_usage_from_each_wire_shape() -> None:
    assert Usage.from_wire({"prompt_tokens": 7, "completion_tokens": 3,
                            "prompt_tokens_details": {"cached_tokens": 2}}) == Usage(7, 3, 2)
    assert Usage.from_wire({"input_tokens": 5, "output_tokens": 4,
                            "input_tokens_details": {"cached_tokens": 1}}) == Usage(5, 4, 1)
    anthropic = {"input_tokens": 5, "output_tokens": 4, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 3}
    assert Usage.from_wire(anthropic) == Usage(18, 4, 10)
    assert Usage.from_wire({"prompt_tokens": None, "completion_tokens": True}) == Usage(0, 0, 0)


def test_estimate_uses_the_output_cap_or_a_default() -> None:
    assert estimate({"max_tokens": 100}, 400) == Estimate(100, 100)
    assert estimate({"max_completion_tokens": 50}, 40) == Estimate(10, 50)
    assert estimate({"max_output_tokens": 7, "max_tokens": False}, 0) == Estimate(0, 7)
    assert estimate({}, 10**9).prompt == 32_768
    assert estimate(None, 8).completion == 256


# --- config ------------------------------------------------------------------------------

def config(**extra: Any) -> GatewayConfig:
    key: dict[str, Any] = {"name": "team-a", "key": "sk-a", **extra.pop("key", {})}
    data: dict[str, Any] = {
        "version": 1, "keys": [key, {"name": "other", "key": "sk-o"}],
        "providers": [{"name": "demo", "type": "echo", "prefix": "demo", "models": ["echo", "echo2"],
                       **extra.pop("provider", {})},
                      {"name": "spare", "type": "echo", "prefix": "spare", "models": ["echo"]}],
        **extra,
    }
    return parse_config(yaml.safe_dump(data)).config


def test_config_budget_needs_a_price_for_every_usable_model() -> None:
    with pytest.raises(ConfigError) as err:
        config(key={"budget": {"usd": 5}}, prices={"demo/echo": {"input": 1, "output": 1}})
    assert [str(i) for i in err.value.issues] == [
        "keys[0].budget (line 2): no price for demo/echo2, spare/echo (a key with a budget may only use priced "
        "models: add them to prices, or narrow keys[].models)"]
    with pytest.raises(ConfigError, match=r"keys\[0\].budget.*a budget needs prices"):
        config(key={"budget": {"usd": 5}})
    ok = config(key={"budget": {"usd": 5, "period": "day"}, "models": ["demo/echo"]},
                prices={"demo/echo": {"input": 1, "output": 1}})
    assert ok.keys[0].budget is not None and ok.keys[0].budget.period == "day"


def test_config_rejects_bad_limits_with_their_places() -> None:
    with pytest.raises(ConfigError) as err:
        config(limits={"rpm": 0, "rules": [{"model": "demo/*"}], "store": "redis"},
               prices={"demo/*": {"input": -1, "output": 1}})
    places = {i.place for i in err.value.issues}
    assert {"limits.rpm", "limits.rules[0]", "prices.demo/*.input"} <= places or \
        {"limits.rpm", "limits.rules[0]"} <= places
    with pytest.raises(ConfigError, match=r"limits.redis \(line \d+\): required when store is redis"):
        config(limits={"store": "redis"})
    with pytest.raises(ConfigError, match=r"limits.redis.url.*redis://"):
        config(limits={"store": "redis", "redis": {"url": "http://x"}})


# --- the limiter over the memory store ---------------------------------------------------

class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Seen:
    def __init__(self) -> None:
        self.refusals: list[tuple[str, str, str]] = []
        self.errors: list[str] = []
        self.spend: list[tuple[str, str, str, float]] = []
        self.budgets: list[tuple[str, float]] = []

    def refused(self, key: str, scope: str, kind: str) -> None:
        self.refusals.append((key, scope, kind))

    def store_error(self, store: str) -> None:
        self.errors.append(store)

    def spent(self, key: str, model: str, provider: str, usd: float) -> None:
        self.spend.append((key, model, provider, usd))

    def budget(self, key: str, usd: float) -> None:
        self.budgets.append((key, usd))


def limiter(cfg: GatewayConfig, store: Any = None, clock: Clock | None = None, seen: Seen | None = None) -> Limiter:
    return Limiter(cfg, store if store is not None else MemoryStore(), clock or Clock(), seen)


async def admits(lim: Limiter, n: int, key: str = "team-a", model: str = "demo/echo",
                 provider: str = "demo") -> list[Any]:
    return [await _try(lim, key, model, provider) for _ in range(n)]


async def _try(lim: Limiter, key: str, model: str, provider: str) -> Any:
    try:
        return await lim.admit(key, [(model, provider)], SMALL)
    except LimitExceeded as exc:
        return exc


async def test_rpm_admits_exactly_n_per_window_then_429_until_it_ends() -> None:
    clock, seen = Clock(), Seen()
    lim = limiter(config(key={"limits": {"rpm": 3}}), clock=clock, seen=seen)
    got = await admits(lim, 4)
    assert [type(x).__name__ for x in got] == ["Ticket"] * 3 + ["LimitExceeded"]
    refusal = got[3]
    assert (refusal.status, refusal.code, refusal.type) == (429, "rate_limited", "rate_limit_error")
    assert refusal.headers["retry-after"] == "30"  # half a minute left in the window
    assert refusal.headers["x-ratelimit-remaining-requests"] == "0"
    assert "key team-a" in refusal.message and seen.refusals == [("team-a", "key", "requests")]
    assert got[2].headers() == {"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "0",
                                "x-ratelimit-reset-requests": "30s"}
    assert isinstance(await _try(lim, "other", "demo/echo", "demo"), type(got[0]))  # other keys are not counted
    clock.now += 30_000
    assert [type(x).__name__ for x in await admits(lim, 3)] == ["Ticket"] * 3


async def test_concurrent_admits_on_one_loop_are_exact() -> None:
    lim = limiter(config(limits={"rpm": 25}))
    got = await asyncio.gather(*(_try(lim, k, "demo/echo", "demo") for k in ["team-a", "other"] * 40))
    assert sum(not isinstance(x, LimitExceeded) for x in got) == 25


async def test_a_refusal_reserves_nothing_anywhere() -> None:
    store = MemoryStore()
    lim = limiter(config(key={"limits": {"rpm": 5}}, limits={"concurrency": 1}), store)
    held = await lim.admit("team-a", [("demo/echo", "demo")], SMALL)
    refused = await _try(lim, "team-a", "demo/echo", "demo")
    assert isinstance(refused, LimitExceeded) and (refused.scope, refused.kind) == ("gateway", "concurrency")
    assert refused.headers["retry-after"] == "1"
    await held.settle(Usage(1, 1))
    # the refused request took no rpm: 4 more fit (5 in all)
    assert sum(not isinstance(x, LimitExceeded) for x in [await _settled(lim) for _ in range(5)]) == 4


async def _settled(lim: Limiter) -> Any:
    t = await _try(lim, "team-a", "demo/echo", "demo")
    if not isinstance(t, LimitExceeded):
        await t.settle(None)
    return t


async def test_tokens_reserved_at_start_and_settled_to_real_usage() -> None:
    clock = Clock()
    lim = limiter(config(key={"limits": {"tpm": 1000}}), clock=clock)
    big = await lim.admit("team-a", [("demo/echo", "demo")], Estimate(100, 800))
    assert big.headers()["x-ratelimit-remaining-tokens"] == "100"
    assert isinstance(await _try_est(lim, Estimate(50, 100)), LimitExceeded)  # 900 held + 150 > 1000
    await big.settle(Usage(100, 20))  # only 120 used: 780 come back
    small = await _try_est(lim, Estimate(50, 100))
    assert not isinstance(small, LimitExceeded)
    await small.settle(Usage(50, 900))  # more than reserved: 120 + 950 = 1070, over the limit
    refused = await _try_est(lim, Estimate(1, 1))
    assert isinstance(refused, LimitExceeded) and refused.kind == "tokens"
    clock.now += 30_000  # a fresh window lets even a request larger than the limit through, alone
    alone = await _try_est(lim, Estimate(0, 5000))
    assert not isinstance(alone, LimitExceeded)
    assert isinstance(await _try_est(lim, Estimate(0, 1)), LimitExceeded)


async def _try_est(lim: Limiter, est: Estimate) -> Any:
    try:
        return await lim.admit("team-a", [("demo/echo", "demo")], est)
    except LimitExceeded as exc:
        return exc


async def test_a_failed_exchange_refunds_its_tokens_and_a_late_settle_charges_the_new_window() -> None:
    clock = Clock()
    store = MemoryStore()
    lim = limiter(config(key={"limits": {"tpm": 1000}}), store, clock)
    failed = await lim.admit("team-a", [("demo/echo", "demo")], Estimate(0, 900))
    await failed.settle(None)
    late = await lim.admit("team-a", [("demo/echo", "demo")], Estimate(0, 1000))
    clock.now += 60_000  # settles in the next window: only the excess is carried over
    await late.settle(Usage(0, 1200))
    check = lim.key_checks("team-a", clock.now)[0]
    assert await store.read([check], clock.now) == [200]


async def test_concurrency_released_at_settle_and_leases_expire() -> None:
    clock = Clock()
    lim = limiter(config(key={"limits": {"concurrency": 2}}, limits={"lease": "10s"}), clock=clock)
    a, _ = await admits(lim, 2)
    c = await _try(lim, "team-a", "demo/echo", "demo")
    assert isinstance(c, LimitExceeded) and c.kind == "concurrency"
    await a.settle(Usage(1, 1))
    await a.settle(Usage(1, 1))  # settling twice gives back once
    assert not isinstance(await _try(lim, "team-a", "demo/echo", "demo"), LimitExceeded)
    assert isinstance(await _try(lim, "team-a", "demo/echo", "demo"), LimitExceeded)
    clock.now += 10_000  # a replica died holding both: the leases run out
    assert not isinstance(await _try(lim, "team-a", "demo/echo", "demo"), LimitExceeded)


BUDGET = {"key": {"budget": {"usd": 0.001, "period": "day"}}, "prices": {"*": {"input": 1, "output": 1}}}


async def test_budget_stops_a_key_until_the_period_rolls_over() -> None:
    clock = Clock()
    lim = limiter(config(**BUDGET), clock=clock)
    for _ in range(2):  # 2 x 600 tokens at 1 USD per 1M = 0.0012 USD > 0.001
        t = await lim.admit("team-a", [("demo/echo", "demo")], SMALL)
        await t.settle(Usage(300, 300))
    refused = await _try(lim, "team-a", "demo/echo", "demo")
    assert isinstance(refused, LimitExceeded) and (refused.code, refused.kind) == ("budget_exceeded", "budget")
    assert refused.headers["retry-after"] == str(13 * 3600 + 59 * 60 + 30)  # until midnight UTC
    assert not isinstance(await _try(lim, "other", "demo/echo", "demo"), LimitExceeded)
    clock.now += int(refused.headers["retry-after"]) * 1000
    assert not isinstance(await _try(lim, "team-a", "demo/echo", "demo"), LimitExceeded)


async def test_spend_is_kept_per_key_and_model_and_total_never_rolls_over() -> None:
    store, clock = MemoryStore(), Clock()
    lim = limiter(config(key={"budget": {"usd": 1, "period": "total"}}, prices={"*": {"input": 1, "output": 3}}),
                  store, clock)
    for model in ("demo/echo", "demo/echo2", "demo/echo"):
        t = await lim.admit("team-a", [(model, "demo")], SMALL)
        assert t.cost_usd(Usage(1000, 1000)) == pytest.approx(0.004)
        await t.settle(Usage(1000, 1000))
    assert await store.spend_by_model("s:team-a:total") == {"demo/echo": 8_000_000, "demo/echo2": 4_000_000}
    clock.now += 400 * 86_400_000
    check = lim.budget_check("team-a", clock.now)
    assert check is not None and await store.read([check], clock.now) == [12_000_000]


async def test_unpriced_model_refused_to_a_budgeted_key() -> None:
    lim = limiter(config(key={"budget": {"usd": 1}}, prices={"demo/*": {"input": 1, "output": 1},
                                                            "spare/*": {"input": 1, "output": 1}}))
    with pytest.raises(GatewayError) as err:
        await lim.admit("team-a", [("discovered/model", "demo")], SMALL)
    assert (err.value.status, err.value.code) == (403, "model_not_priced")


async def test_reload_keeps_counters_and_a_changed_limit_applies_to_the_running_window() -> None:
    stores, clock = Stores(), Clock()
    cfg = config(key={"limits": {"rpm": 5}})
    first = limiter(cfg, stores.get(cfg.limits), clock)
    await admits(first, 4)
    tighter = config(key={"limits": {"rpm": 4}}, provider={"limits": {"rpm": 100}})
    second = limiter(tighter, stores.get(tighter.limits), clock)
    assert stores.get(tighter.limits) is stores.get(cfg.limits)
    assert isinstance((await admits(second, 1))[0], LimitExceeded)


async def test_model_rules_and_provider_limits_belong_to_the_target() -> None:
    lim = limiter(config(limits={"rules": [{"model": "demo/*", "rpm": 1}]}, provider={"limits": {"rpm": 3}}))
    await admits(lim, 1, model="demo/echo")
    refused = (await admits(lim, 1, model="demo/echo"))[0]
    assert isinstance(refused, LimitExceeded) and refused.scope == "model" and refused.target_scope
    assert "model demo/echo" in refused.message
    await admits(lim, 1, model="demo/echo2")  # each model has its own counter under one rule
    t = await lim.admit("team-a", [("spare/echo", "spare")], SMALL)
    await t.attempt("spare/echo", "spare")  # the same target: nothing changes
    await admits(lim, 1, model="demo/other")  # the provider's third
    with pytest.raises(LimitExceeded) as err:
        await t.attempt("demo/x", "demo")  # fall-over to a full provider
    assert err.value.scope == "provider" and "provider demo" in err.value.message


async def test_fall_over_gives_back_the_previous_targets_concurrency() -> None:
    lim = limiter(config(provider={"limits": {"concurrency": 1}}))
    t = await lim.admit("team-a", [("demo/echo", "demo")], SMALL)
    assert isinstance(await _try(lim, "other", "demo/echo", "demo"), LimitExceeded)
    await t.attempt("spare/echo", "spare")
    assert not isinstance(await _try(lim, "other", "demo/echo", "demo"), LimitExceeded)


async def test_headers_name_the_tightest_limit() -> None:
    lim = limiter(config(key={"limits": {"rpm": 100, "tpm": 10_000}}, limits={"rpm": 3, "tpm": 1_000_000}))
    t = await lim.admit("team-a", [("demo/echo", "demo")], Estimate(5, 5))
    assert t.headers() == {"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "2",
                           "x-ratelimit-reset-requests": "30s", "x-ratelimit-limit-tokens": "10000",
                           "x-ratelimit-remaining-tokens": "9990", "x-ratelimit-reset-tokens": "30s"}


async def test_no_limits_configured_never_touches_the_store() -> None:
    lim = limiter(config(), BrokenStore())
    t = await lim.admit("team-a", [("demo/echo", "demo")], SMALL)
    await t.settle(Usage(1, 1))
    assert t.headers() == {}


class BrokenStore:
    label = "broken"

    async def reserve(self, checks: Sequence[Check], lease: str, now_ms: int) -> Verdict:
        raise StoreError("down")

    async def apply(self, ops: Sequence[Op], now_ms: int) -> None:
        raise StoreError("down")


@pytest.mark.parametrize("on_error", ["open", "closed"])
async def test_store_down_serves_open_or_refuses_closed(on_error: str) -> None:
    seen = Seen()
    cfg = config(key={"limits": {"rpm": 1}}, limits={"store": "redis", "redis": {"url": "redis://x",
                                                                                 "on_error": on_error}})
    lim = limiter(cfg, BrokenStore(), seen=seen)
    if on_error == "open":
        tickets = [await lim.admit("team-a", [("demo/echo", "demo")], SMALL) for _ in range(3)]
        await tickets[0].settle(Usage(1, 1))
        assert seen.errors == ["broken"] * 3  # nothing was held, so the settle has nothing to send
    else:
        with pytest.raises(GatewayError) as err:
            await lim.admit("team-a", [("demo/echo", "demo")], SMALL)
        assert (err.value.status, err.value.code, err.value.headers) == (503, "limits_unavailable",
                                                                         {"retry-after": "1"})
        assert seen.errors == ["broken"]


def test_memory_store_sweeps_what_expired() -> None:
    store = MemoryStore()
    check = Check("concurrency", "key", "c:k", 5, 1, 1000)
    asyncio.run(store.reserve([check, Check("requests", "key", "r:k:1", 5, 1, 500)], "a", 0))
    asyncio.run(store.apply([Op("spend", "s:k:d", 5, 100, "m")], 0))
    store.sweep(2000)
    assert (store._counters, store._leases, store._spend) == ({}, {}, {})


async def test_spend_reported_for_metrics_and_usage_for_the_status_page() -> None:
    seen, clock = Seen(), Clock()
    cfg = config(key={"limits": {"rpm": 10, "concurrency": 4}, "budget": {"usd": 2, "period": "month"}},
                 prices={"demo/*": {"input": 1, "output": 2}, "spare/*": {"input": 0, "output": 0}})
    lim = limiter(cfg, clock=clock, seen=seen)
    t = await lim.admit("team-a", [("demo/echo2", "demo")], SMALL)
    await t.settle(Usage(500_000, 250_000))
    held = await lim.admit("team-a", [("demo/echo", "demo")], SMALL)
    assert seen.spend == [("team-a", "demo/echo2", "demo", 1.0)] and seen.budgets == [("team-a", 1.0)]
    assert await lim.key_usage("team-a") == {
        "requests": {"limit": 10, "used": 2, "resets_in": "30s"},
        "concurrency": {"limit": 4, "used": 1},
        "budget": {"usd": 2, "spent_usd": 1.0, "period": "month", "resets_in": "709h59m30s"}}
    assert await lim.key_usage("other") == {}
    await held.settle(None)
    idle = limiter(config(prices={"*": {"input": 1, "output": 1}}), BrokenStore(), seen=seen)
    t = await idle.admit("other", [("spare/echo", "spare")], SMALL)
    await t.settle(Usage(1_000_000, 0))  # priced without any limit: counted, no store call
    assert seen.spend[-1] == ("other", "spare/echo", "spare", 1.0) and seen.errors == []


def test_check_prints_limits_budgets_and_prices(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from vte_proxy.cli import check

    cfg = {"version": 1, "keys": [{"name": "team-a", "key": "sk-a", "limits": {"rpm": 600, "concurrency": 20},
                                   "budget": {"usd": 500, "period": "month"}}],
           "providers": [{"name": "demo", "type": "echo", "prefix": "demo", "models": ["echo"],
                          "limits": {"tpm": 2000000}}],
           "prices": {"demo/*": {"input": 2.5, "output": 10, "cached_input": 1.25}},
           "limits": {"rpm": 10000, "rules": [{"model": "demo/echo", "rpm": 100}], "store": "redis",
                      "redis": {"url": "redis://127.0.0.1:1/0", "on_error": "closed", "timeout": "50ms"}}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert check(str(path)) == 0
    assert capsys.readouterr().out.splitlines()[2:] == [
        "  limits: store redis (on_error closed, timeout 50ms); gateway rpm 10000",
        "    model demo/echo: rpm 100",
        "    provider demo: tpm 2000000",
        "    key team-a: rpm 600, concurrency 20; budget 500 USD per month",
        "  price demo/*: input 2.5, output 10, cached_input 1.25 USD per 1M tokens"]
    del cfg["prices"]
    path.write_text(yaml.safe_dump(cfg))
    assert check(str(path)) == 1
    assert "keys[0].budget (line 2): a budget needs prices" in capsys.readouterr().err


async def test_admit_takes_the_first_target_with_room_and_counts_only_the_final_refusal() -> None:
    seen = Seen()
    lim = limiter(config(provider={"limits": {"rpm": 1}}, limits={"rules": [{"model": "spare/*", "rpm": 1}]}),
                  seen=seen)
    both = [("demo/echo", "demo"), ("spare/echo", "spare")]
    first = await lim.admit("team-a", both, SMALL)
    assert first.holds("demo/echo", "demo")
    second = await lim.admit("team-a", both, SMALL)
    assert second.holds("spare/echo", "spare") and not second.holds("demo/echo", "demo")
    assert seen.refusals == []
    with pytest.raises(LimitExceeded) as err:
        await lim.admit("team-a", both, SMALL)
    assert err.value.scope == "model" and seen.refusals == [("team-a", "model", "requests")]
    with pytest.raises(GatewayError, match="no target"):
        await lim.admit("team-a", [], SMALL)


@given(st.integers(min_value=1, max_value=6), st.lists(st.integers(min_value=0, max_value=4 * MINUTE_MS), max_size=40))
def test_rpm_admits_min_of_limit_and_attempts_in_every_window(n: int, offsets: list[int]) -> None:
    clock = Clock(T0)
    lim = limiter(config(key={"limits": {"rpm": n}}), clock=clock)
    admitted: dict[int, int] = {}
    attempts: dict[int, int] = {}
    for offset in sorted(offsets):
        clock.now = T0 + offset
        window = clock.now // MINUTE_MS
        attempts[window] = attempts.get(window, 0) + 1
        if not isinstance(asyncio.run(_try(lim, "team-a", "demo/echo", "demo")), LimitExceeded):
            admitted[window] = admitted.get(window, 0) + 1
    assert {w: admitted.get(w, 0) for w in attempts} == {w: min(n, a) for w, a in attempts.items()}
