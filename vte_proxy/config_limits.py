"""The config of limits and spend: caps per scope, per-model rules, budgets, prices and the Redis store.

Part of the gateway.yaml schema (:mod:`vte_proxy.config`); :mod:`vte_proxy.limits` enforces it.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from vte_proxy.config_base import Duration, Frozen


class LimitSet(Frozen):
    """Caps for one scope (a key, a model, a provider, the whole gateway); each is optional."""

    rpm: int | None = Field(None, ge=1, description="Requests per minute (fixed 60 s windows).")
    tpm: int | None = Field(None, ge=1, description="Tokens (input + output) per minute (fixed 60 s windows).")
    concurrency: int | None = Field(None, ge=1, description="Requests in flight at once.")

    def given(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.concurrency is not None


class BudgetConfig(Frozen):
    """Spend cap of a key in USD per calendar period (UTC); priced from ``prices``."""

    usd: float = Field(gt=0, description="USD the key may spend per period.")
    period: Literal["day", "week", "month", "total"] = Field(
        "month", description="day | week (from Monday) | month | total (never rolls over); UTC.")


class Price(Frozen):
    """USD per 1M tokens."""

    input: float = Field(ge=0, description="USD per 1M prompt tokens.")
    output: float = Field(ge=0, description="USD per 1M completion tokens.")
    cached_input: float | None = Field(None, ge=0, description="USD per 1M cached prompt tokens (default: input).")


class LimitRule(LimitSet):
    """Limits of every exposed model that ``model`` (a name or glob) matches; each model counts on its own."""

    model: str = Field(min_length=1, description="Exposed model name or glob; the first matching rule applies.")

    @model_validator(mode="after")
    def _some_limit(self) -> LimitRule:
        if not self.given():
            raise ValueError("give at least one of rpm, tpm, concurrency")
        return self


class RedisConfig(Frozen):
    """Where the shared counters live when ``limits.store`` is ``redis``."""

    url: SecretStr = Field(description="redis://[:password@]host:port/db or rediss://...; usually ${REDIS_URL}.")
    on_error: Literal["open", "closed"] = Field(
        "open", description="Redis unreachable: open serves without limits, closed answers 503.")
    timeout: Duration = Field(0.1, gt=0, le=5, description="Timeout of each Redis call (e.g. 100ms).")
    prefix: str = Field("vte:", pattern=r"^[A-Za-z0-9_.:{}-]*$", description="Prefix of every Redis key.")

    @field_validator("url")
    @classmethod
    def _redis_url(cls, v: SecretStr) -> SecretStr:
        if urlsplit(v.get_secret_value()).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return v


class LimitsConfig(LimitSet):
    """Gateway-wide caps, per-model rules, and where the counters live."""

    rules: tuple[LimitRule, ...] = Field((), description="Per-model limits by exposed name or glob.")
    store: Literal["memory", "redis"] = Field(
        "memory", description="memory: exact within one process; redis: shared by every worker and replica.")
    redis: RedisConfig | None = None
    lease: Duration = Field(900.0, gt=0, description="Longest a concurrency slot is held if a replica dies.")

    @model_validator(mode="after")
    def _redis_given(self) -> LimitsConfig:
        if self.store == "redis" and self.redis is None:
            raise ValueError("limits.redis: required when store is redis (give at least url)")
        return self
