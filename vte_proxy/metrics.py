"""Prometheus metrics (names and labels fixed by PRODUCT.md).

Label values only ever come from the config: exposed model names, provider names, key
names, a closed set of endpoints, reasons and results. Children are resolved once per label
set and cached, so the hot path does a dict lookup, not ``labels()``.

With ``--workers N`` the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts and
``/metrics`` aggregates every worker's files (prometheus_client's multiprocess mode): counters
and histograms are summed over all workers, dead ones included (their counts stay counted);
the in-flight gauge is summed over live workers only, and the files of live gauges of workers
that died (uvicorn restarts them) are dropped at the next scrape.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

# No ``*_created`` series: they double the exposition and multiprocess mode has none anyway.
disable_created_metrics()  # type: ignore[no-untyped-call]

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
               multiprocess_mode="livemostrecent")
# Tracing (vte_proxy.tracing): spans never exported, by reason. queue_full: the export queue
# was full (a slow collector), also one per request not traced while it is; export_failed: the
# collector refused or could not be reached after the exporter's retries; collector_down: a
# request not traced at all while the collector fails, one per request; shutdown: still queued
# when the tracer stopped.
TRACE_SPANS_DROPPED = Counter("vte_trace_spans_dropped", "Trace spans dropped instead of exported, by reason.",
                              ["reason"])
TRACE_SPANS_EXPORTED = Counter("vte_trace_spans_exported", "Trace spans the collector accepted.")
COST = Counter("vte_cost_usd", "Spend priced from `prices`, in USD.", ["model", "provider", "key"])
RATE_LIMITED = Counter("vte_rate_limited", "Requests refused with 429 by a limit or budget.", ["key", "scope", "kind"])
BUDGET_SPENT = Gauge("vte_budget_spent_usd", "Spend of a key with a budget in its current period (the shared store's "
                     "figure).", ["key"], multiprocess_mode="mostrecent")
LIMITS_STORE_ERRORS = Counter("vte_limits_store_errors", "Calls to the limits store that failed (down, timed out).",
                              ["store"])

# The pools issue. Gauges of states are 1 for the state a key/circuit is in and 0 for the
# others; with several workers each worker keeps its own pools and breakers, and the value is
# the number of (live) workers that see it in that state.
KEY_STATE = Gauge("vte_upstream_key_state", "Upstream keys of provider pools by state (ready, cooling, disabled).",
                  ["provider", "upstream_key", "state"], multiprocess_mode="livesum")
ROUTE_SELECTIONS = Counter("vte_route_selections", "Requests a route sent to each of its targets "
                           "(first choice or fall-over).", ["route", "target"])
BREAKER_STATE = Gauge("vte_circuit_breaker_state", "Circuit breakers of route targets by state "
                      "(closed, open, half_open).", ["route", "target", "state"], multiprocess_mode="livesum")
USAGE_ESTIMATED = Counter("vte_usage_estimated", "Answers without usage whose tokens were estimated offline "
                          "(and counted in vte_tokens_total).", ["provider"])

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


def set_states(metric: Any, labels: tuple[str, str], current: str, states: tuple[str, ...]) -> None:
    """One key's (or circuit's) state: 1 for ``current``, 0 for the other ``states``."""
    for state in states:
        child(metric, *labels, state).set(1 if state == current else 0)


def forget_states(metric: Any, keep: set[tuple[str, str]], states: tuple[str, ...]) -> None:
    """Drop the series of keys (or circuits) no longer in the config (zero them with workers)."""
    for labels in {k[1:3] for k in _cache if k[0] == id(metric)} - keep:
        for state in states:
            if multiprocess_dir():
                child(metric, *labels, state).set(0)
                continue
            with contextlib.suppress(KeyError):
                metric.remove(*labels, state)
            _cache.pop((id(metric), *labels, state), None)


def multiprocess_dir() -> str | None:
    """The multiprocess directory when several workers share the metrics, else None."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def set_models_available(counts: dict[str, int]) -> None:
    for name in list(_known_providers - counts.keys()):
        if multiprocess_dir():  # series cannot be removed from the shared files: report 0
            child(MODELS, name).set(0)
        else:
            with contextlib.suppress(KeyError):
                MODELS.remove(name)
            _cache.pop((id(MODELS), name), None)  # a provider that comes back needs a new child
        _known_providers.discard(name)
    for name, n in counts.items():
        child(MODELS, name).set(n)
        _known_providers.add(name)


_known_providers: set[str] = set()

_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def reap_dead_workers(path: str) -> None:
    """Drop the live-gauge files of workers that are gone (a worker uvicorn restarted would
    otherwise keep its last in-flight count forever)."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    dead = {int(m.group(1)) for n in names if (m := _LIVE_FILE.fullmatch(n))} - {os.getpid()}
    for pid in dead:
        if not _pid_alive(pid):
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _collect() -> Any:
    path = multiprocess_dir()
    if path:
        reap_dead_workers(path)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric (all workers' in multiprocess mode)."""
    return generate_latest(_collect()), CONTENT_TYPE_LATEST


_ZERO = {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0}


def model_totals() -> dict[str, dict[str, int]]:
    """Requests, errors (status >= 400) and tokens per model label since start, over all
    workers: the status page's totals are the same numbers as ``/metrics``."""
    out: dict[str, dict[str, int]] = {}
    source = _collect()
    families = source.collect() if source is not REGISTRY else [*REQUESTS.collect(), *TOKENS.collect()]
    for family in families:
        for sample in family.samples:
            if sample.name == "vte_requests_total":
                _add_request(out.setdefault(sample.labels["model"], dict(_ZERO)), sample.labels, sample.value)
            elif sample.name == "vte_tokens_total":
                row = out.setdefault(sample.labels["model"], dict(_ZERO))
                row[f"{sample.labels['type']}_tokens"] += int(sample.value)
    return out


def _add_request(row: dict[str, int], labels: dict[str, str], value: float) -> None:
    row["requests"] += int(value)
    if int(labels["code"]) >= 400:
        row["errors"] += int(value)
