"""The ``redis`` store: counters shared by every worker and replica, exact across them.

Round trips per request: ONE for check-and-reserve of every applicable limit (the ``RESERVE``
Lua script, run with EVALSHA), ONE to settle (the ``APPLY`` script). Each script runs
atomically in Redis, so concurrent admits from any number of processes never pass more than
a limit. Every key carries the configured prefix and expires (windows after their minute,
leases after ``limits.lease``, spend after its period; only ``total`` spend is kept for good).
Calls time out in milliseconds (``limits.redis.timeout``); after a failure the store answers
"down" at once for :data:`COOL_DOWN` seconds instead of making every request wait a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from vte_proxy.limits.store import Check, Op, StoreError, Verdict

# After a failed call, fail fast for this long before trying Redis again.
COOL_DOWN = 0.5

_KIND = {"requests": "r", "tokens": "t", "concurrency": "c", "budget": "b"}
_OP = {"add": "a", "release": "r", "spend": "s"}

# KEYS[i]: the counter of check i. ARGV[1]: now (ms), ARGV[2]: lease id, then per check
# 4 values: kind (r|t|c|b), limit, amount, ttl (ms). Pass 1 checks all, pass 2 reserves all:
# nothing is written unless every check passes. Returns {1, used...} or {0, failed, seen...}.
RESERVE = """
local now, lease = tonumber(ARGV[1]), ARGV[2]
local seen = {}
for i = 1, #KEYS do
  local b = 2 + (i - 1) * 4
  local kind, limit, amount = ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local k, cur, ok = KEYS[i], 0, false
  if kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
    cur = redis.call('ZCARD', k)
    ok = cur + 1 <= limit
  elseif kind == 'b' then
    cur = tonumber(redis.call('HGET', k, 'total') or '0')
    ok = cur < limit
  else
    cur = tonumber(redis.call('GET', k) or '0')
    ok = cur + amount <= limit or (kind == 't' and cur == 0)
  end
  if not ok then return {0, i - 1, unpack(seen)} end
  seen[i] = cur
end
local used = {1}
for i = 1, #KEYS do
  local b = 2 + (i - 1) * 4
  local kind, amount, ttl = ARGV[b + 1], tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local k = KEYS[i]
  if kind == 'c' then
    redis.call('ZADD', k, now + ttl, lease)
    redis.call('PEXPIRE', k, ttl)
    used[i + 1] = seen[i] + 1
  elseif kind == 'b' then
    used[i + 1] = seen[i]
  else
    used[i + 1] = redis.call('INCRBY', k, amount)
    redis.call('PEXPIRE', k, ttl)
  end
end
return used
"""

# KEYS[i]: the key of op i. ARGV per op: kind (a|r|s), value, ttl (ms), member.
# Returns the spend total after the last spend op, or -1 when there was none.
APPLY = """
local spent = -1
for i = 1, #KEYS do
  local b = (i - 1) * 4
  local kind, value, ttl, member = ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), ARGV[b + 4]
  local k = KEYS[i]
  if kind == 'r' then
    redis.call('ZREM', k, member)
  elseif kind == 's' then
    spent = redis.call('HINCRBY', k, 'total', value)
    redis.call('HINCRBY', k, member, value)
    if ttl > 0 then redis.call('PEXPIRE', k, ttl) end
  elseif value < 0 then
    if redis.call('EXISTS', k) == 1 and redis.call('INCRBY', k, value) < 0 then
      redis.call('SET', k, 0, 'KEEPTTL')
    end
  else
    redis.call('INCRBY', k, value)
    redis.call('PEXPIRE', k, ttl)
  end
end
return spent
"""


class RedisStore:
    """Counters in one Redis (redis-py asyncio with the hiredis parser), keys under ``prefix``."""

    label = "redis"

    def __init__(self, url: str, prefix: str = "vte:", timeout: float = 0.1,
                 client: aioredis.Redis | None = None) -> None:
        self.prefix = prefix
        self.timeout = timeout
        self._client = client or aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False,
            retry=None, health_check_interval=0, max_connections=512)
        self._reserve = self._client.register_script(RESERVE)
        self._apply = self._client.register_script(APPLY)
        self._down_until = 0.0

    async def reserve(self, checks: Sequence[Check], lease: str, now_ms: int) -> Verdict:
        keys = [self.prefix + c.name for c in checks]
        args: list[Any] = [now_ms, lease]
        for c in checks:
            args += [_KIND[c.kind], c.limit, c.amount, c.ttl_ms]
        reply = await self._call(self._reserve, keys, args)
        if reply[0] == 1:
            return Verdict(True, tuple(int(v) for v in reply[1:]))
        return Verdict(False, tuple(int(v) for v in reply[2:]), int(reply[1]))

    async def apply(self, ops: Sequence[Op], now_ms: int) -> int | None:
        if not ops:
            return None
        args: list[Any] = []
        for op in ops:
            args += [_OP[op.kind], op.value, op.ttl_ms, op.member]
        spent = int(await self._call(self._apply, [self.prefix + op.name for op in ops], args))
        return spent if spent >= 0 else None

    async def read(self, checks: Sequence[Check], now_ms: int) -> list[int]:
        async def run() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for c in checks:
                name = self.prefix + c.name
                if c.kind == "concurrency":
                    pipe.zcount(name, f"({now_ms}", "+inf")
                elif c.kind == "budget":
                    pipe.hget(name, "total")
                else:
                    pipe.get(name)
            return await pipe.execute()

        return [int(v or 0) for v in await self._guard(run())]

    async def spend_by_model(self, name: str) -> dict[str, int]:
        fields = await self._guard(self._client.hgetall(self.prefix + name))
        return {_text(k): int(v) for k, v in fields.items() if _text(k) != "total"}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await self._guard(script(keys=keys, args=args))

    async def _guard(self, call: Any) -> Any:
        """Run one Redis call under the timeout; any failure is a :class:`StoreError`."""
        if time.monotonic() < self._down_until:
            call.close()
            raise StoreError("redis is down (cooling down after a failure)")
        try:
            async with asyncio.timeout(self.timeout * 2):
                return await call
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = time.monotonic() + COOL_DOWN
            raise StoreError(f"redis: {exc.__class__.__name__}") from None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
