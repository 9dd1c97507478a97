"""The redis store against a real ``redis-server`` (Debian's, started per test on loopback):
exact limits across independent store instances, budgets rolling over, spend kept across
gateway restarts, Redis killed mid-run under each ``on_error``, and the same answers as the
memory store for the same sequence of operations."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.redis_server import RedisServer
from tests.unit.test_limits import BUDGET, SMALL, Clock, Seen, config
from vte_proxy.errors import GatewayError
from vte_proxy.limits import Limiter, LimitExceeded, Stores, Usage
from vte_proxy.limits.memory_store import MemoryStore
from vte_proxy.limits.redis_store import RedisStore
from vte_proxy.limits.store import Check, Op

pytestmark = pytest.mark.usefixtures("redis_server")
LONG = 10**8
TIMEOUT = 5.0  # generous: two cores shared with other test runs (the default is 100 ms)


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[Callable[..., RedisStore]]:
    made: list[RedisStore] = []

    def make(prefix: str = "vte:", timeout: float = TIMEOUT) -> RedisStore:
        made.append(RedisStore(redis_server.url, prefix, timeout))
        return made[-1]

    yield make
    for store in made:
        await store.aclose()


def redis_cfg(server: RedisServer, on_error: str = "open", **extra: Any) -> Any:
    return config(limits={"store": "redis", "redis": {"url": server.url, "on_error": on_error, "timeout": "5s"},
                          **extra.pop("limits", {})}, **extra)


async def outcome(lim: Limiter, key: str = "team-a") -> bool:
    try:
        ticket = await lim.admit(key, [("demo/echo", "demo")], SMALL)
    except LimitExceeded:
        return False
    await ticket.settle(Usage(5, 5))
    return True


async def test_two_store_instances_on_one_redis_allow_exactly_n(redis_server: RedisServer,
                                                               stores: Callable[..., RedisStore]) -> None:
    cfg = redis_cfg(redis_server, key={"limits": {"rpm": 37}}, limits={"tpm": 10**6})
    clock, seen = Clock(), Seen()
    replicas = [Limiter(cfg, stores(), clock, seen), Limiter(cfg, stores(), clock, seen)]
    got = await asyncio.gather(*(outcome(replicas[i % 2]) for i in range(120)))
    assert seen.errors == []  # (a store error would serve without limits: on_error open)
    assert sum(got) == 37


async def test_concurrency_is_shared_and_released(redis_server: RedisServer,
                                                  stores: Callable[..., RedisStore]) -> None:
    cfg = redis_cfg(redis_server, key={"limits": {"concurrency": 5}})
    a, b = Limiter(cfg, stores(), Clock()), Limiter(cfg, stores(), Clock())
    held = [await (a if i % 2 else b).admit("team-a", [("demo/echo", "demo")], SMALL) for i in range(5)]
    with pytest.raises(LimitExceeded):
        await a.admit("team-a", [("demo/echo", "demo")], SMALL)
    await held[0].settle(None)
    await b.admit("team-a", [("demo/echo", "demo")], SMALL)


async def test_tokens_settle_across_instances(redis_server: RedisServer, stores: Callable[..., RedisStore]) -> None:
    cfg = redis_cfg(redis_server, key={"limits": {"tpm": 100}})
    clock = Clock()
    a, b = Limiter(cfg, stores(), clock), Limiter(cfg, stores(), clock)
    t = await a.admit("team-a", [("demo/echo", "demo")], SMALL)
    await t.settle(Usage(60, 30))
    with pytest.raises(LimitExceeded) as err:
        await b.admit("team-a", [("demo/echo", "demo")], SMALL)
    assert err.value.kind == "tokens" and err.value.headers["x-ratelimit-limit-tokens"] == "100"


async def test_budget_rolls_over_and_spend_survives_a_gateway_restart(
        redis_server: RedisServer, stores: Callable[..., RedisStore]) -> None:
    cfg = redis_cfg(redis_server, **BUDGET)
    clock = Clock()
    first = Limiter(cfg, stores(), clock)
    for _ in range(2):
        t = await first.admit("team-a", [("demo/echo", "demo")], SMALL)
        await t.settle(Usage(300, 300))
    await first.store.aclose()
    restarted = Limiter(cfg, stores(), clock)  # a new process: nothing in memory, spend in Redis
    with pytest.raises(LimitExceeded) as err:
        await restarted.admit("team-a", [("demo/echo", "demo")], SMALL)
    assert err.value.code == "budget_exceeded"
    clock.now += int(err.value.headers["retry-after"]) * 1000
    assert await outcome(restarted)


async def test_keys_are_prefixed_and_expire(redis_server: RedisServer, stores: Callable[..., RedisStore]) -> None:
    cfg = redis_cfg(redis_server, key={"limits": {"rpm": 5, "tpm": 500, "concurrency": 2},
                                       "budget": {"usd": 1, "period": "total"}},
                    prices={"*": {"input": 1, "output": 1}}, limits={"rpm": 100})
    lim = Limiter(cfg, stores("team:"), Clock())
    held = await lim.admit("team-a", [("demo/echo", "demo")], SMALL)
    await outcome(lim)
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        keys = sorted(await client.keys("*"))
        assert keys == ["team:c:k:team-a", "team:r:g:29936760", "team:r:k:team-a:29936760",
                        "team:s:team-a:total", "team:t:k:team-a:29936760"]
        ttls = {k: await client.pttl(k) for k in keys}
        assert ttls.pop("team:s:team-a:total") == -1  # a total budget's spend is kept for good
        assert all(0 < ttl <= 900_000 for ttl in ttls.values()), ttls
        assert await client.hgetall("team:s:team-a:total") == {"total": "10000", "demo/echo": "10000"}
    finally:
        await client.aclose()
    await held.settle(None)


@pytest.mark.parametrize("on_error", ["open", "closed"])
async def test_redis_killed_mid_run_and_back(redis_server: RedisServer, stores: Callable[..., RedisStore],
                                             on_error: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vte_proxy.limits.redis_store.COOL_DOWN", 0.0)
    seen = Seen()
    lim = Limiter(redis_cfg(redis_server, on_error, key={"limits": {"rpm": 3}}), stores(), Clock(), seen)
    assert [await outcome(lim) for _ in range(4)] == [True, True, True, False]
    redis_server.stop()
    if on_error == "open":
        assert [await outcome(lim) for _ in range(3)] == [True] * 3  # served without limits
    else:
        for _ in range(3):
            with pytest.raises(GatewayError) as err:
                await outcome(lim)
            assert (err.value.status, err.value.code) == (503, "limits_unavailable")
    assert seen.errors == ["redis"] * 3
    redis_server.start()  # empty again (no persistence in the test): limits apply from a fresh window
    assert [await outcome(lim) for _ in range(4)] == [True, True, True, False]


async def test_a_down_redis_fails_fast_during_the_cool_down(redis_server: RedisServer,
                                                            stores: Callable[..., RedisStore]) -> None:
    store = stores()
    redis_server.stop()
    check = Check("requests", "key", "r:k:x:1", 1, 1, 1000)
    for _ in range(2):
        with pytest.raises(Exception, match="redis"):
            await store.reserve([check], "l", 0)
    assert store._down_until > 0


async def test_redis_and_memory_stores_agree(stores: Callable[..., RedisStore]) -> None:
    """The same random sequence of reserves and settles gives the same verdicts and counts."""
    rnd = random.Random(15)
    memory, redis = MemoryStore(), stores("agree:")
    names = ["r:a:1", "t:a:1", "c:a", "s:a:d"]
    kinds: list[Any] = ["requests", "tokens", "concurrency", "budget"]
    now = 1_000
    for step in range(300):
        now += rnd.randrange(0, 400)
        if rnd.random() < 0.6:
            picked = rnd.sample(range(4), rnd.randrange(1, 5))
            # Redis expires keys on its own clock: only leases (scored with the injected clock) expire here.
            checks = [Check(kinds[i], "key", names[i], rnd.randrange(1, 30), rnd.randrange(0, 6),
                            3_000 if kinds[i] == "concurrency" else LONG) for i in picked]
            lease = f"l{step % 7}"
            assert await memory.reserve(checks, lease, now) == await redis.reserve(checks, lease, now), step
        else:
            ops = [Op("add", "t:a:1", rnd.randrange(-8, 8), LONG), Op("release", "c:a", member=f"l{rnd.randrange(7)}"),
                   Op("spend", "s:a:d", rnd.randrange(0, 5), LONG, "m")]
            await memory.apply(ops, now)
            await redis.apply(ops, now)
    probe = [Check(k, "key", n, 1, 0, 1) for k, n in zip(kinds, names, strict=True)]
    assert await memory.read(probe, now) == await redis.read(probe, now)
    assert await memory.spend_by_model("s:a:d") == await redis.spend_by_model("s:a:d")


async def test_stores_keep_one_store_per_setting_across_reloads(redis_server: RedisServer) -> None:
    stores = Stores()
    first = redis_cfg(redis_server).limits
    same = redis_cfg(redis_server, key={"limits": {"rpm": 1}}).limits
    other = config(limits={"store": "redis", "redis": {"url": redis_server.url, "prefix": "other:"}}).limits
    assert stores.get(first) is stores.get(same) is not stores.get(other)
    assert stores.get(config().limits) is stores.memory
    assert isinstance(stores.get(first), RedisStore)
    await stores.aclose()
