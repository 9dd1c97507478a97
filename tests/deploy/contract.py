"""The metrics contract the deployment tests check against: PRODUCT.md's table, written out by
hand (not derived from vte_proxy.metrics) so that a rename in the code fails them."""

from __future__ import annotations

# PRODUCT.md's metrics table: name -> labels (histograms by their family name).
PRODUCT_METRICS: dict[str, set[str]] = {
    "vte_requests_total": {"endpoint", "model", "provider", "key", "code"},
    "vte_request_duration_seconds": {"endpoint", "model", "provider"},
    "vte_time_to_first_token_seconds": {"model", "provider"},
    "vte_tokens_total": {"model", "provider", "key", "type"},
    "vte_upstream_errors_total": {"provider", "reason"},
    "vte_usage_missing_total": {"provider"},
    "vte_in_flight_requests": {"provider"},
    "vte_config_reloads_total": {"result"},
    "vte_config_last_reload_success_timestamp_seconds": set(),
    "vte_models_available": {"provider"},
    "vte_cost_usd_total": {"model", "provider", "key"},
    "vte_rate_limited_total": {"key", "scope", "kind"},
    "vte_budget_spent_usd": {"key"},
    "vte_upstream_key_state": {"provider", "upstream_key", "state"},
    "vte_route_selections_total": {"route", "target"},
    "vte_limits_store_errors_total": {"store"},
}
# Metrics the dashboard uses beyond the product table (the pools issue added them).
MORE_METRICS: dict[str, set[str]] = {
    "vte_circuit_breaker_state": {"route", "target", "state"},
    "vte_usage_estimated_total": {"provider"},
}
HISTOGRAMS = {"vte_request_duration_seconds", "vte_time_to_first_token_seconds"}


def dashboard_series() -> dict[str, set[str]]:
    """Every metric a panel may query -> its labels; histograms by their ``_bucket`` series."""
    out = {}
    for name, labels in {**PRODUCT_METRICS, **MORE_METRICS}.items():
        if name in HISTOGRAMS:
            out[f"{name}_bucket"] = labels | {"le"}
        else:
            out[name] = labels
    return out
