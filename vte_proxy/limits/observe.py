"""The limiter's events as Prometheus metrics (names and labels from PRODUCT.md).

Label values are config names only: the key's name, the exposed model, the provider, and
the closed sets ``scope`` (key, model, provider, gateway) and ``kind`` (requests, tokens,
concurrency, budget).
"""

from __future__ import annotations

from vte_proxy import metrics


class LimitMetrics:
    """:class:`~vte_proxy.limits.limiter.Observer` backed by :mod:`vte_proxy.metrics`."""

    def refused(self, key: str, scope: str, kind: str) -> None:
        metrics.child(metrics.RATE_LIMITED, key, scope, kind).inc()

    def store_error(self, store: str) -> None:
        metrics.child(metrics.LIMITS_STORE_ERRORS, store).inc()

    def spent(self, key: str, model: str, provider: str, usd: float) -> None:
        metrics.child(metrics.COST, model, provider, key).inc(usd)

    def budget(self, key: str, usd: float) -> None:
        metrics.child(metrics.BUDGET_SPENT, key).set(usd)
