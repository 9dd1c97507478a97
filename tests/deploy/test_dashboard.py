"""The Grafana dashboard (dashboards/vte-proxy.json and its copy inside the Helm chart)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from tests.deploy.contract import dashboard_series

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "vte-proxy.json"
CHART_COPY = REPO / "helm" / "vte-proxy" / "dashboards" / "vte-proxy.json"

# Labels each metric has (tests/deploy/contract.py: PRODUCT.md and the pools metrics).
LABELS = dashboard_series()
METRICS = set(LABELS)
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
UNITS = {"s", "ms", "reqps", "ops", "short", "none", "percent", "percentunit", "dtdurations", "dateTimeFromNow",
         "currencyUSD"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(dashboard) if p["type"] != "row"]


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in data_panels(dashboard) for t in p.get("targets", [])]


def as_promql(expr: str) -> str:
    """Replace Grafana's variables by values so that the query parses as plain PromQL."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$__interval", "1m")
    return re.sub(r"\$\{?(model|provider|key)\}?", ".*", expr)


def test_identical_copy_inside_the_chart() -> None:
    assert CHART_COPY.read_bytes() == DASHBOARD.read_bytes(), (
        "helm/vte-proxy/dashboards/vte-proxy.json must be a copy of dashboards/vte-proxy.json"
    )


def test_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "vte-proxy"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard.get("id") is None, "an exported id breaks provisioning into another Grafana"


def test_portable_datasource(dashboard: dict[str, Any]) -> None:
    text = DASHBOARD.read_text()
    assert "__inputs" not in dashboard and "__requires" not in dashboard
    assert "${DS_" not in text
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    for panel in data_panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


def test_model_provider_key_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("model", "provider", "key"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["multi"] is True and variable["includeAll"] is True
        assert variable["allValue"] == ".*"
        assert variable["datasource"]["uid"] == "${datasource}"
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((vte_requests_total|vte_tokens_total)(\{.*\})?, (\w+)\)", query)
        assert match and match.group(3) == name, query


def test_every_panel_has_a_unit(dashboard: dict[str, Any]) -> None:
    for panel in data_panels(dashboard):
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit in UNITS, f"{panel['title']}: unit {unit!r}"


def test_layout_is_sane(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert panel["title"]
    for panel in data_panels(dashboard):
        assert panel["targets"], panel["title"]
        assert panel.get("description"), panel["title"]


def test_queries_parse_and_use_known_metrics_and_labels(dashboard: dict[str, Any]) -> None:
    queries = exprs(dashboard)
    assert len(queries) >= 15
    used: set[str] = set()
    for expr in queries:
        promql_parser.parse(as_promql(expr))
        names = set(re.findall(r"\b(vte_[a-z0-9_]+)\b", expr))
        assert names and names <= METRICS, expr
        used |= names
        for metric, matchers in re.findall(r"\b(vte_[a-z0-9_]+)\{([^}]*)\}", expr):
            labels = set(re.findall(r"(\w+)\s*(?:=~|!=|!~|=)", matchers))
            assert labels <= LABELS[metric] | TARGET_LABELS, f"{metric} has no label {labels - LABELS[metric]}"
        for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
            labels = {label.strip() for label in grouping.split(",")}
            metric_labels = set().union(*(LABELS[n] for n in names))
            assert labels <= metric_labels | TARGET_LABELS, expr
    assert used == METRICS, f"metrics without a panel: {METRICS - used}"


def test_hourly_tokens_by_model(dashboard: dict[str, Any]) -> None:
    (panel,) = [p for p in data_panels(dashboard) if p["title"] == "Tokens per hour by model"]
    (target,) = panel["targets"]
    assert re.fullmatch(
        r'sum by \(model, type\) \(increase\(vte_tokens_total\{model=~"\$model", provider=~"\$provider", '
        r'key=~"\$key"\}\[1h\]\)\)',
        target["expr"],
    ), target["expr"]
    assert panel["fieldConfig"]["defaults"]["custom"]["drawStyle"] == "bars"
    assert panel["interval"] == "1h"
    assert any(p["title"] == "Requests per hour by model" for p in data_panels(dashboard))


def test_latency_quantiles_on_both_histograms(dashboard: dict[str, Any]) -> None:
    queries = exprs(dashboard)
    for histogram in ("vte_request_duration_seconds_bucket", "vte_time_to_first_token_seconds_bucket"):
        quantiles = {
            q
            for expr in queries
            for q in re.findall(r"histogram_quantile\((0\.\d+), sum by \([^)]*\ble\b[^)]*\) \(rate\(" + histogram, expr)
        }
        assert {"0.5", "0.95", "0.99"} <= quantiles, (histogram, quantiles)
    units = {
        p["fieldConfig"]["defaults"]["unit"]
        for p in data_panels(dashboard)
        if any("histogram_quantile" in t["expr"] for t in p["targets"])
    }
    assert units == {"s"}


def test_operational_panels(dashboard: dict[str, Any]) -> None:
    titles = {p["title"]: p for p in data_panels(dashboard)}
    assert "Request rate by status code" in titles
    assert "by (code)" in titles["Request rate by status code"]["targets"][0]["expr"]
    assert titles["Request rate by status code"]["fieldConfig"]["defaults"]["unit"] == "reqps"
    joined = "\n".join(exprs(dashboard))
    assert "sum by (provider) (vte_in_flight_requests" in joined
    assert "sum by (provider, reason) (rate(vte_upstream_errors_total" in joined
    assert "time() - vte_config_last_reload_success_timestamp_seconds" in joined
    assert "sum by (result) (increase(vte_config_reloads_total" in joined
    assert "vte_models_available" in joined


def test_panels_of_spend_limits_routes_keys_and_apis(dashboard: dict[str, Any]) -> None:
    titles = {p["title"]: p for p in data_panels(dashboard)}
    wanted = {
        "Spend per hour by key and model": ("sum by (key, model) (increase(vte_cost_usd_total", "currencyUSD"),
        "Budget spent this period by key": ("max by (key) (vte_budget_spent_usd", "currencyUSD"),
        "Rate-limited requests by key, scope and kind": ("sum by (key, scope, kind) (rate(vte_rate_limited_total",
                                                         "reqps"),
        "Upstream keys by state": ("count by (provider, state) (vte_upstream_key_state", "short"),
        "Upstream keys not ready": ("sum by (provider, upstream_key, state) (vte_upstream_key_state", "short"),
        "Route selections by target": ("sum by (route, target) (rate(vte_route_selections_total", "reqps"),
        "Limits store errors": ("sum by (store) (rate(vte_limits_store_errors_total", "ops"),
    }
    for title, (query, unit) in wanted.items():
        assert title in titles, title
        assert any(t["expr"].startswith(query) for t in titles[title]["targets"]), title
        assert titles[title]["fieldConfig"]["defaults"]["unit"] == unit, title
    apis = [t["expr"] for t in titles["Requests by API: Anthropic vs OpenAI"]["targets"]]
    assert any('endpoint=~"messages.*"' in e for e in apis) and any('endpoint!~"messages.*"' in e for e in apis)
