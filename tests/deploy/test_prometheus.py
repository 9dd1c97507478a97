"""A real Prometheus (Debian's) scrapes a real `vte-proxy serve` after real traffic.

Proves what the dashboard and the alerts assume: every metric of the product contract is
exposed with its documented labels, every query of the Grafana dashboard returns data (a
panel that can never show data is a bug), and Prometheus itself evaluates the chart's
PrometheusRule without errors, with the alerts firing or quiet as the traffic says.

Traffic comes in two rounds with a scrape in between, so counters and histograms grow
between samples and rates are real numbers, not zeros.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import promql_parser
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam

from tests.deploy.contract import HISTOGRAMS, MORE_METRICS, PRODUCT_METRICS
from tests.deploy.rendered import JOB, NAMESPACE, write_rules
from tests.redis_server import RedisServer
from tests.support import (
    CLIENT_KEY,
    GatewayProcess,
    Reply,
    ScriptedUpstream,
    completion,
    free_port,
    running_gateway,
)

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "vte-proxy.json"
PROMETHEUS = shutil.which("prometheus")
REDIS_SERVER = shutil.which("redis-server")

pytestmark = [
    pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not installed: the scrape, dashboard-query "
                                                  "and rule-evaluation checks do not run (`.ci/run` installs it)"),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed: the limits store of the scraped "
                                                    "gateway needs it (`.ci/run` installs it)"),
    pytest.mark.timeout(180),
]

# Features that are not built yet, by metric name (or, for a new endpoint, the query fragment
# that selects it): their metrics are not required, and a dashboard query on them must not
# have data yet (when one does, the feature landed: take it out of this set).
NOT_YET_BUILT: set[str] = set()
# Labels Prometheus adds to every scraped series here (the Kubernetes ones come from the
# ServiceMonitor; `namespace` is set on the target below, as it would be there).
TARGET_LABELS = {"__name__", "job", "instance", "namespace"}
# Closed sets of label values (PRODUCT.md).
LABEL_VALUES = {
    ("vte_rate_limited_total", "scope"): {"key"},
    ("vte_rate_limited_total", "kind"): {"requests"},
    ("vte_upstream_key_state", "state"): {"ready", "cooling", "disabled"},
    ("vte_route_selections_total", "route"): {"smart"},
    ("vte_tokens_total", "type"): {"prompt", "completion"},
    ("vte_config_reloads_total", "result"): {"success", "failure"},
}
CONFIG_KEYS = {"team", "limited", "admin"}


# ------------------------------------------------------------------ Prometheus
@dataclass
class Prometheus:
    url: str
    # Queries are evaluated at this Unix time once it is set: the last scrape after the
    # traffic. A later scrape that fails on a loaded machine (its timeout is 1s) would mark
    # every series stale for instant queries at "now".
    at: float | None = None

    def _when(self) -> dict[str, str]:
        return {} if self.at is None else {"time": str(self.at)}

    def _span(self) -> dict[str, str]:
        return {} if self.at is None else {"start": str(self.at - 300), "end": str(self.at)}

    def query(self, promql: str) -> list[dict[str, Any]]:
        reply = httpx.get(self.url + "/api/v1/query", params={"query": promql, **self._when()}, timeout=10).json()
        assert reply["status"] == "success", f"{promql}: {reply}"
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def series(self, metric: str) -> list[dict[str, str]]:
        reply = httpx.get(self.url + "/api/v1/series", params={"match[]": f'{metric}{{job="{JOB}"}}', **self._span()},
                          timeout=10).json()
        assert reply["status"] == "success", reply
        found: list[dict[str, str]] = reply["data"]
        return found

    def label_values(self, label: str, match: str) -> list[str]:
        reply = httpx.get(f"{self.url}/api/v1/label/{label}/values", params={"match[]": match, **self._span()},
                          timeout=10).json()
        assert reply["status"] == "success", reply
        values: list[str] = reply["data"]
        return values

    def rules(self) -> list[dict[str, Any]]:
        reply = httpx.get(self.url + "/api/v1/rules", timeout=10).json()
        return [rule for group in reply["data"]["groups"] for rule in group["rules"]]

    def up_at(self, moment: float) -> bool:
        reply = httpx.get(self.url + "/api/v1/query", params={"query": f'up{{job="{JOB}"}}', "time": str(moment)},
                          timeout=10).json()
        return [r["value"][1] for r in reply["data"]["result"]] == ["1"]

    def wait_for_scrape_after(self, moment: float, timeout: float = 30) -> float:
        """Until the gateway was scraped successfully after ``moment``; that scrape's time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # timestamp() gives the sample's time only when applied to a plain selector.
            result = self.query(f'timestamp(up{{job="{JOB}"}})')
            if result and (scraped := float(result[0]["value"][1])) > moment and self.up_at(scraped):
                return scraped
            time.sleep(0.2)
        raise AssertionError(f"no scrape of the gateway after {moment}: {self.query('up')}")


@contextlib.contextmanager
def running_prometheus(tmp: Path, target_port: int, rules: Path) -> Iterator[Prometheus]:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": JOB, "static_configs": [
            {"targets": [f"127.0.0.1:{target_port}"], "labels": {"namespace": NAMESPACE}}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen([str(PROMETHEUS), f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:
        wait_ready(prom, proc, tmp / "prometheus.log")
        yield prom
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def wait_ready(prom: Prometheus, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"prometheus exited:\n{log.read_text()}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(prom.url + "/-/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"prometheus not ready:\n{log.read_text()}")


# ------------------------------------------------------------------ traffic
def no_usage_reply() -> Reply:
    body = completion("gpt-4o", "no usage here")
    del body["usage"]
    return Reply(body)


LIMITED_KEY = "sk-limited-key-000"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


def config(upstream_url: str, redis_url: str, demo_models: str = "[echo]") -> str:
    """Keys with a budget and a limit, priced models, limits in Redis, a pool of two upstream
    keys, a route."""
    return textwrap.dedent(f"""\
        version: 1
        keys:
          - name: team
            key: ${{TEST_CLIENT_KEY}}
            budget: {{usd: 1000, period: month}}
          - name: limited
            key: {LIMITED_KEY}
            models: ["demo/*"]
            limits: {{rpm: 1}}
          - name: admin
            key: sk-admin-key-000
            status: true
        providers:
          - name: up
            type: openai
            base_url: {upstream_url}
            api_keys:
              - name: main
                key: ${{TEST_UPSTREAM_KEY}}
              - name: spare
                key: sk-spare-key-0
            prefix: up
            models: [gpt-4o, gpt-4o-mini]
          - name: demo
            type: echo
            prefix: demo
            models: {demo_models}
        routes:
          - name: smart
            strategy: fallback
            targets: [up/gpt-4o, demo/echo]
        prices:
          "up/*": {{input: 2.5, output: 10}}
          "demo/*": {{input: 0.5, output: 1}}
        limits:
          rpm: 100000
          store: redis
          redis: {{url: "{redis_url}", on_error: open, timeout: 2s}}
        """)


def traffic(gw: GatewayProcess, up: ScriptedUpstream) -> None:
    """Every kind of request the metrics describe."""
    core_traffic(gw, up)
    limits_traffic(gw)
    pool_and_route_traffic(gw, up)
    anthropic_traffic(gw)


COOL_SECONDS = 1
_last_cooled = [0.0]  # when the last round cooled a key (monotonic)


def pool_and_route_traffic(gw: GatewayProcess, up: ScriptedUpstream) -> None:
    """A 429 cools one key of the pool (the other answers); a route picks its first target."""
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    # the key the previous round cooled must be back, or this 429 would leave none ready
    time.sleep(max(0.0, _last_cooled[0] + COOL_SECONDS + 0.2 - time.monotonic()))
    rested = gw.logs().count("is rate limited, resting it")
    up.script.clear()
    up.push(Reply({"error": {"message": "slow down", "type": "rate_limit_error"}}, status=429,
                  headers={"retry-after": str(COOL_SECONDS)}))
    client.chat.completions.create(model="up/gpt-4o", messages=HELLO)
    _last_cooled[0] = time.monotonic()
    assert gw.logs().count("is rate limited, resting it") == rested + 1, gw.logs()[-2000:]
    assert client.chat.completions.create(model="smart", messages=HELLO).model == "smart"


def limits_traffic(gw: GatewayProcess) -> None:
    """A key over its rpm (429); the priced requests of core_traffic spend the team's budget."""
    limited = openai.OpenAI(base_url=gw.url + "/v1", api_key=LIMITED_KEY, max_retries=0)
    refused = 0
    for _ in range(3):  # rpm 1 in fixed minute windows: at least one of three is refused
        try:
            limited.chat.completions.create(model="demo/echo", messages=HELLO)
        except openai.RateLimitError:
            refused += 1
    assert refused, gw.logs()[-2000:]


def anthropic_traffic(gw: GatewayProcess) -> None:
    """Claude Code's calls: /v1/messages (translated for the echo provider) and count_tokens."""
    client = anthropic.Anthropic(base_url=gw.url, auth_token=CLIENT_KEY, max_retries=0)
    said = client.messages.create(model="demo/echo", max_tokens=32, messages=[{"role": "user", "content": "hi claude"}])
    assert said.model == "demo/echo"
    assert client.messages.count_tokens(model="demo/echo", messages=[{"role": "user", "content": "hi"}]).input_tokens


def core_traffic(gw: GatewayProcess, up: ScriptedUpstream) -> None:
    """Chat, stream, echo, embeddings, an upstream error, an answer without usage, a key
    refused a model, an unknown model."""
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    hello = HELLO
    client.chat.completions.create(model="up/gpt-4o", messages=hello)
    stream = client.chat.completions.create(model="up/gpt-4o-mini", messages=hello, stream=True,
                                            stream_options={"include_usage": True})
    assert [c for c in stream]
    client.chat.completions.create(model="demo/echo", messages=hello)
    client.embeddings.create(model="up/gpt-4o", input="hi")
    up.push(Reply({"error": {"message": "boom", "type": "server_error"}}, status=500),
            Reply({"error": {"message": "boom", "type": "server_error"}}, status=500),
            Reply({"error": {"message": "boom", "type": "server_error"}}, status=500))
    with contextlib.suppress(openai.APIStatusError):
        client.chat.completions.create(model="up/gpt-4o", messages=hello)
    up.script.clear()
    up.push(no_usage_reply())
    client.chat.completions.create(model="up/gpt-4o", messages=hello)
    limited = openai.OpenAI(base_url=gw.url + "/v1", api_key=LIMITED_KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        limited.chat.completions.create(model="up/gpt-4o", messages=hello)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="up/no-such-model", messages=hello)


def reload_to(gw: GatewayProcess, text: str, result: str) -> None:
    """Write a new config and wait until the gateway counted a reload with ``result``."""
    before = reload_count(gw, result)
    gw.config_path.write_text(text)
    deadline = time.monotonic() + 15
    while reload_count(gw, result) <= before:
        assert time.monotonic() < deadline, f"no {result} reload:\n{gw.logs()}"
        time.sleep(0.1)


def reload_count(gw: GatewayProcess, result: str) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=5).text
    found = re.search(rf'^vte_config_reloads_total\{{result="{result}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


@dataclass
class Scraped:
    prometheus: Prometheus
    gateway: GatewayProcess


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    tmp = tmp_path_factory.mktemp("prometheus")
    # Both threshold alerts just above 0: they must fire on this traffic (the default
    # thresholds are unit-tested with promtool in test_alert_rules.py).
    rules = write_rules(tmp / "rules.yaml", {"alerts": {"upstreamErrorRate": {"threshold": 1e-6},
                                                        "highLatencyP95": {"thresholdSeconds": 1e-6}}})
    up = ScriptedUpstream().start()
    redis = RedisServer().start()
    base = config(up.url, redis.url)
    try:
        with running_gateway(tmp, base) as gw, running_prometheus(tmp, gw.port, rules) as prom:
            prom.wait_for_scrape_after(time.time())
            traffic(gw, up)
            reload_to(gw, base + "bad_top_level_key: 1\n", "failure")
            prom.wait_for_scrape_after(time.time())
            traffic(gw, up)
            reload_to(gw, base + "unknown_again: 2\n", "failure")
            reload_to(gw, config(up.url, redis.url, "[echo, echo2]"), "success")
            # Redis goes away for good (nothing after this needs it): an error in each of the
            # last two scrapes, so its rate has two samples.
            redis.stop()
            store_outage(gw)
            prom.wait_for_scrape_after(time.time())
            store_outage(gw)
            prom.at = prom.wait_for_scrape_after(time.time())
            yield Scraped(prom, gw)
    finally:
        redis.stop()
        up.stop()


def store_outage(gw: GatewayProcess) -> None:
    """A request while Redis is down: served (on_error: open), the store error counted."""
    before = store_errors(gw)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    client.chat.completions.create(model="demo/echo", messages=HELLO)
    assert store_errors(gw) > before, gw.logs()[-2000:]


def store_errors(gw: GatewayProcess) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=5).text
    found = re.search(r'^vte_limits_store_errors_total\{store="redis"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


# ------------------------------------------------------------------ metrics and labels
def required_metrics() -> dict[str, set[str]]:
    every = {**PRODUCT_METRICS, **MORE_METRICS}
    return {name: labels for name, labels in every.items() if name not in NOT_YET_BUILT}


def exposed_series(metric: str, labels: set[str]) -> list[tuple[str, set[str]]]:
    """(series name, its labels) pairs a metric of the table is exposed as."""
    if metric in HISTOGRAMS:
        return [(f"{metric}_bucket", labels | {"le"}), (f"{metric}_count", labels), (f"{metric}_sum", labels)]
    return [(metric, labels)]


@pytest.mark.parametrize("metric", sorted(required_metrics()))
def test_metric_is_scraped_with_its_documented_labels(scraped: Scraped, metric: str) -> None:
    for name, labels in exposed_series(metric, required_metrics()[metric]):
        series = scraped.prometheus.series(name)
        assert series, f"{name}: no series in Prometheus"
        for one in series:
            assert set(one) - TARGET_LABELS == labels, f"{name}: labels {sorted(one)}"


def test_label_values_come_from_the_config(scraped: Scraped) -> None:
    prom = scraped.prometheus
    for (metric, label), allowed in LABEL_VALUES.items():
        assert set(prom.label_values(label, metric)) == allowed, (metric, label)
    assert set(prom.label_values("key", "vte_requests_total")) <= CONFIG_KEYS
    models = set(prom.label_values("model", "vte_requests_total"))
    assert "unknown" in models and "up/no-such-model" not in models, models
    assert set(prom.label_values("provider", "vte_models_available")) == {"up", "demo"}
    assert {c for c in prom.label_values("code", "vte_requests_total")} >= {"200", "403", "404", "429", "500"}
    endpoints = set(prom.label_values("endpoint", "vte_requests_total"))
    assert endpoints >= {"chat/completions", "embeddings", "messages", "messages/count_tokens"}, endpoints


# ------------------------------------------------------------------ dashboard queries
def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    out: list[tuple[str, str]] = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            out.extend((inner["title"], t["expr"]) for t in inner.get("targets", []))
    return out


def as_promql(expr: str) -> str:
    """Grafana's variables replaced the way Grafana would with "All" selected."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$__interval", "1m")
    return re.sub(r"\$\{?(model|provider|key)\}?", ".*", expr)


def finite(result: list[dict[str, Any]]) -> list[float]:
    return [v for r in result if math.isfinite(v := float(r["value"][1]))]


def pending_features(expr: str) -> set[str]:
    metrics = set(re.findall(r"\b(vte_[a-z0-9_]+?)(?:_bucket|_count|_sum)?\b", expr))
    return {f for f in NOT_YET_BUILT if f in metrics or (not f.startswith("vte_") and f in expr)}


@pytest.mark.parametrize(("title", "expr"), dashboard_targets(), ids=lambda v: v if len(v) < 50 else None)
def test_dashboard_query_returns_data(scraped: Scraped, title: str, expr: str) -> None:
    result = scraped.prometheus.query(as_promql(expr))
    if pending_features(expr):
        assert not result, f"{title}: {sorted(pending_features(expr))} have data now: remove them from NOT_YET_BUILT"
        return
    assert finite(result), f"panel {title!r} shows no data: {as_promql(expr)} -> {result}"


def test_dashboard_variables_have_values(scraped: Scraped) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
        assert match, query
        assert scraped.prometheus.label_values(match.group(2), as_promql(match.group(1))), query


# ------------------------------------------------------------------ the chart's alerts in Prometheus
def selectors(node: Any) -> Iterator[str]:
    """Every vector selector of a parsed PromQL expression, without its offset."""
    if isinstance(node, promql_parser.VectorSelector):
        yield re.sub(r"\s+offset\s+\S+", "", str(node))
        return
    for attr in ("lhs", "rhs", "expr", "vector_selector", "args"):
        child = getattr(node, attr, None)
        for item in child if isinstance(child, list) else [child]:
            if item is not None:
                yield from selectors(item)


def test_rule_selectors_match_scraped_series(scraped: Scraped) -> None:
    rules = [r for r in scraped.prometheus.rules() if r["type"] == "alerting"]
    assert len(rules) == 4
    for rule in rules:
        found = list(selectors(promql_parser.parse(rule["query"])))
        assert found, rule["name"]
        for selector in found:
            assert scraped.prometheus.query(selector), f"{rule['name']}: {selector} matches no series"


def test_prometheus_evaluates_the_alerts(scraped: Scraped) -> None:
    """Prometheus loaded the chart's rules and evaluates them without error; at the time of
    the last scrape the threshold alerts (lowered to just above 0) hold and the others do not."""
    prom = scraped.prometheus
    assert prom.at is not None
    deadline = time.monotonic() + 20
    while not all(r["health"] == "ok" and r["lastEvaluation"] > rfc3339(prom.at) for r in prom.rules()):
        assert time.monotonic() < deadline, textwrap.shorten(json.dumps(prom.rules()), 3000)
        time.sleep(0.5)
    holds = {r["name"]: bool(prom.query(r["query"])) for r in prom.rules()}
    assert holds == {
        "VteProxyUpstreamErrorRate": True,  # upstream 500s
        "VteProxyHighLatencyP95": True,
        "VteProxyNoSuccessfulRequests": False,  # 2xx keep coming
        "VteProxyConfigReloadFailing": False,  # a good config was loaded after the failed ones
    }


def rfc3339(unix: float) -> str:
    """Prometheus' timestamp format, comparable as a string with its lastEvaluation."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix + 1))
