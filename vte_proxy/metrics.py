"""Prometheus metrics (names and labels fixed by PRODUCT.md).

Label values only ever come from the config: exposed model names, provider names, key
names, a closed set of endpoints, reasons and results. Children are resolved once per label
set and cached, so the hot path does a dict lookup, not ``labels()``.

With ``--workers N`` the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts and
``/metrics`` aggregates every worker's files (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# LLM calls take from milliseconds to minutes: the default 10 s ceiling would hide them.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)

REQUESTS = Counter("vte_requests", "Requests answered, by status code.",
                   ["endpoint", "model", "provider", "key", "code"])
DURATION = Histogram("vte_request_duration_seconds", "Time from request to the last byte of the answer.",
                     ["endpoint", "model", "provider"], buckets=DURATION_BUCKETS)
TTFT = Histogram("vte_time_to_first_token_seconds", "Time from request to the first content chunk (streams).",
                 ["model", "provider"], buckets=TTFT_BUCKETS)
TOKENS = Counter("vte_tokens", "Tokens reported by upstream usage.", ["model", "provider", "key", "type"])
UPSTREAM_ERRORS = Counter("vte_upstream_errors", "Failures talking to providers, by reason.",
                          ["provider", "reason"])
USAGE_MISSING = Counter("vte_usage_missing", "Answers that carried no usage (tokens not counted).",
                        ["provider"])
IN_FLIGHT = Gauge("vte_in_flight_requests", "Requests being answered now.", ["provider"],
                  multiprocess_mode="livesum")
RELOADS = Counter("vte_config_reloads", "Config reloads, by result.", ["result"])
LAST_RELOAD = Gauge("vte_config_last_reload_success_timestamp_seconds",
                    "Unix time of the last successful config load.", multiprocess_mode="livemax")
MODELS = Gauge("vte_models_available", "Exposed models per provider.", ["provider"],
               multiprocess_mode="livemax")

_cache: dict[tuple[Any, ...], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """The child of ``metric`` for ``labels``, resolved once."""
    k = (id(metric), *labels)
    c = _cache.get(k)
    if c is None:
        if len(_cache) > 50_000:  # label sets come from the config, but bound it anyway
            _cache.clear()
        c = _cache[k] = metric.labels(*labels)
    return c


def set_models_available(counts: dict[str, int]) -> None:
    for name in list(_known_providers - counts.keys()):
        with contextlib.suppress(KeyError):
            MODELS.remove(name)
        _known_providers.discard(name)
    for name, n in counts.items():
        child(MODELS, name).set(n)
        _known_providers.add(name)


_known_providers: set[str] = set()


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric (all workers' in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
