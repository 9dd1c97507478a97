"""``GET /metrics`` after known requests, parsed with prometheus_client's own parser.

The gateway of this module serves other tests too, so counts are compared as differences
between two scrapes around the requests of each test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Stack
from tests.support import (
    ADMIN_KEY,
    CLIENT_KEY,
    LIMITED_KEY,
    THREE_WORDS,
    UPSTREAM_KEY,
    GatewayProcess,
    Reply,
    ScriptedUpstream,
    Stream,
    chunk,
    gateway_yaml,
    running_gateway,
)

SECRETS = [CLIENT_KEY, LIMITED_KEY, ADMIN_KEY, UPSTREAM_KEY]

Labels = frozenset[tuple[str, str]]


class Scrape:
    """Every sample of one ``/metrics`` answer."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]

    def sum(self, name: str, **labels: str) -> float:
        """The sum of ``name`` over every series whose labels include ``labels``."""
        return sum(v for n, lab, v in self.samples if n == name and labels.items() <= lab.items())

    def label_values(self, name: str, label: str) -> set[str]:
        return {lab[label] for n, lab, _ in self.samples if n == name and label in lab}


def scrape(url: str, **kw: object) -> Scrape:
    r = httpx.get(url + "/metrics", **kw)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return Scrape(r.text)


def post(gw: GatewayProcess, endpoint: str, body: dict[str, object], key: str = CLIENT_KEY) -> httpx.Response:
    r = httpx.post(f"{gw.url}/v1/{endpoint}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    r.read()
    return r


def chat(gw: GatewayProcess, model: str, key: str = CLIENT_KEY, **extra: object) -> httpx.Response:
    return post(gw, "chat/completions", {"model": model, "messages": THREE_WORDS, **extra}, key)


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.sum(name, **labels) - before.sum(name, **labels)


def secret_forms(secrets: Iterable[str] = SECRETS) -> list[str]:
    return [form for s in secrets for form in (s, hashlib.sha256(s.encode()).hexdigest())]


def test_tokens_are_counted_exactly_per_model_provider_and_key(s: Stack) -> None:
    gw = s.gateway
    before = scrape(gw.url)
    assert chat(gw, "up/gpt-4o").status_code == 200                                  # 7 + 3
    assert chat(gw, "up/gpt-4o", stream=True).status_code == 200                     # 7 + 3, usage added upstream
    assert post(gw, "embeddings", {"model": "up/gpt-4o", "input": "hi"}).status_code == 200  # 2 + 0
    r = post(gw, "responses", {"model": "up/gpt-4o", "input": "hi", "stream": True})  # 5 + 1
    assert r.status_code == 200 and "response.completed" in r.text
    r = chat(gw, "up/gpt-4o-mini", stream=True, stream_options={"include_usage": True})  # 7 + 3
    assert r.status_code == 200 and '"usage"' in r.text
    assert chat(gw, "demo/echo").status_code == 200                                  # 3 + 3
    assert chat(gw, "demo/echo", LIMITED_KEY, stream=True).status_code == 200        # 3 + 3
    after = scrape(gw.url)

    def tokens(model: str, key: str, type_: str) -> float:
        return delta(before, after, "vte_tokens_total", model=model, key=key, type=type_)

    assert tokens("up/gpt-4o", "team", "prompt") == 7 + 7 + 2 + 5
    assert tokens("up/gpt-4o", "team", "completion") == 3 + 3 + 0 + 1
    assert tokens("up/gpt-4o-mini", "team", "prompt") == 7
    assert tokens("up/gpt-4o-mini", "team", "completion") == 3
    assert tokens("demo/echo", "team", "prompt") == tokens("demo/echo", "team", "completion") == 3
    assert tokens("demo/echo", "limited", "prompt") == tokens("demo/echo", "limited", "completion") == 3
    assert delta(before, after, "vte_tokens_total", provider="up") == 21 + 7 + 7 + 3
    assert delta(before, after, "vte_tokens_total", provider="demo") == 12
    assert after.label_values("vte_tokens_total", "provider") <= {"up", "demo"}
    assert delta(before, after, "vte_usage_missing_total") == 0

    assert delta(before, after, "vte_requests_total", code="200") == 7
    assert delta(before, after, "vte_requests_total", model="up/gpt-4o", endpoint="chat/completions",
                 provider="up", key="team", code="200") == 2
    assert delta(before, after, "vte_requests_total", model="up/gpt-4o", endpoint="responses") == 1
    assert delta(before, after, "vte_request_duration_seconds_count", model="up/gpt-4o") == 4
    # Time to first token: observed for every streamed answer, and only for those.
    assert delta(before, after, "vte_time_to_first_token_seconds_count", model="up/gpt-4o", provider="up") == 2
    assert delta(before, after, "vte_time_to_first_token_seconds_count", model="up/gpt-4o-mini") == 1
    assert delta(before, after, "vte_time_to_first_token_seconds_count", model="demo/echo", provider="demo") == 1
    assert delta(before, after, "vte_time_to_first_token_seconds_bucket", model="demo/echo", le="+Inf") == 1
    # Nothing is in flight once the answers are complete; the gauge exists per provider.
    assert after.sum("vte_in_flight_requests") == 0
    assert after.label_values("vte_in_flight_requests", "provider") == {"up", "demo"}
    assert after.sum("vte_models_available", provider="up") == 2
    assert after.sum("vte_models_available", provider="demo") == 1
    assert after.sum("vte_config_reloads_total", result="success") >= 1
    assert after.sum("vte_config_last_reload_success_timestamp_seconds") > 1_600_000_000


def test_in_flight_counts_a_request_while_the_upstream_answers(s: Stack) -> None:
    # The upstream holds its answer back; meanwhile the gauge shows the request.
    s.upstream.push(Stream([chunk("gpt-4o", {"content": "a"}), chunk("gpt-4o", {}, "stop")], first_delay=2.0))
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(chat, s.gateway, "up/gpt-4o", stream=True)
        seen = 0.0
        while not pending.done() and seen != 1:
            seen = scrape(s.gateway.url).sum("vte_in_flight_requests", provider="up")
        assert seen == 1, "the in-flight gauge never showed the request"
        assert pending.result().status_code == 200
    assert scrape(s.gateway.url).sum("vte_in_flight_requests", provider="up") == 0


def test_requests_by_code_with_unknown_models_collapsed(s: Stack) -> None:
    gw = s.gateway
    junk = ['<script>alert("pwn")</script>', 'evil"} 1\nvte_forged_total 99', "sk-" + "x" * 40]
    s.upstream.push(Reply({"error": {"message": f"upstream exploded, key {UPSTREAM_KEY}"}}, 500))
    before = scrape(gw.url)
    assert chat(gw, "up/gpt-4o", "sk-wrong-key").status_code == 401
    assert chat(gw, "up/gpt-4o", LIMITED_KEY).status_code == 403
    for model in junk:
        assert chat(gw, model).status_code == 404
    failed = chat(gw, "up/gpt-4o")
    assert failed.status_code == 500 and UPSTREAM_KEY not in failed.text
    after = scrape(gw.url)

    def requests(**labels: str) -> float:
        return delta(before, after, "vte_requests_total", **labels)

    assert requests(code="401", key="-", model="unknown", provider="-") == 1
    assert requests(code="403", key="limited", model="up/gpt-4o") == 1
    assert requests(code="404", key="team", model="unknown", provider="-") == len(junk)
    assert requests(code="500", key="team", model="up/gpt-4o", provider="up") == 1
    assert delta(before, after, "vte_upstream_errors_total", provider="up", reason="status") == 1
    assert delta(before, after, "vte_usage_missing_total") == 0  # a failure is not an answer without usage
    models = after.label_values("vte_requests_total", "model")
    assert models <= {"unknown", "up/gpt-4o", "up/gpt-4o-mini", "demo/echo"}
    assert after.label_values("vte_requests_total", "key") <= {"team", "limited", "admin", "-"}
    for text in ("<script", "alert(", "pwn", "evil", "forged", "xxxxxxxx"):
        assert text not in after.text
    for secret in secret_forms():
        assert secret not in after.text


def test_answers_without_usage_are_counted_and_estimated(s: Stack) -> None:
    gw = s.gateway
    bare = {"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
    s.upstream.push(Reply(bare),
                    Stream([chunk("gpt-4o", {"content": "hi"}), chunk("gpt-4o", {}, "stop")]))  # no usage chunk
    before = scrape(gw.url)
    assert chat(gw, "up/gpt-4o").status_code == 200
    assert chat(gw, "up/gpt-4o", stream=True).status_code == 200
    after = scrape(gw.url)
    assert delta(before, after, "vte_usage_missing_total", provider="up") == 2
    assert delta(before, after, "vte_usage_estimated_total", provider="up") == 2  # estimated offline, marked
    assert delta(before, after, "vte_tokens_total", type="completion") == 2  # "hi" twice
    assert delta(before, after, "vte_tokens_total", type="prompt") > 0
    assert delta(before, after, "vte_requests_total", code="200", model="up/gpt-4o") == 2


def test_histogram_buckets_span_milliseconds_to_minutes(s: Stack) -> None:
    chat(s.gateway, "demo/echo", stream=True)
    m = scrape(s.gateway.url)
    for name, low, high in (("vte_request_duration_seconds_bucket", 0.01, 300),
                            ("vte_time_to_first_token_seconds_bucket", 0.01, 60)):
        bounds = {float(le) for le in m.label_values(name, "le")}
        assert min(bounds) <= low and max(bounds - {float("inf")}) >= high and float("inf") in bounds
        assert len(bounds) >= 12


def test_metrics_auth_wants_a_status_key(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    with running_gateway(tmp_path, gateway_yaml(upstream.url, metrics="auth: true\n")) as gw:
        for headers in ({}, {"Authorization": f"Bearer {CLIENT_KEY}"}, {"Authorization": "Bearer sk-nope"}):
            r = httpx.get(gw.url + "/metrics", headers=headers)
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith("Basic ")
            assert "vte_requests" not in r.text
        assert chat(gw, "demo/echo").status_code == 200
        by_basic = scrape(gw.url, auth=("prometheus", ADMIN_KEY))
        by_bearer = scrape(gw.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        for m in (by_basic, by_bearer):
            assert m.sum("vte_tokens_total", model="demo/echo", key="team") == 6


def test_two_workers_share_one_metrics_view(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_yaml(upstream.url))
    gw = GatewayProcess(path, workers=2)
    # The multiprocess directory is wiped at start: a stale file from a previous run must go.
    mp_dir = Path(tempfile.gettempdir()) / f"vte-proxy-metrics-{gw.port}"
    mp_dir.mkdir(exist_ok=True)
    (mp_dir / "counter_1.db").write_bytes(b"stale")
    gw.start()
    try:
        assert not (mp_dir / "counter_1.db").exists()
        for i in range(20):  # a new connection each: the kernel spreads them over the workers
            model = "demo/echo" if i % 2 else "up/gpt-4o"
            assert chat(gw, model, stream=i % 4 == 1).status_code == 200
        m = scrape(gw.url)
        assert m.sum("vte_requests_total") == 20
        assert m.sum("vte_requests_total", model="demo/echo", code="200") == 10
        assert m.sum("vte_tokens_total", model="demo/echo", key="team") == 10 * 6
        assert m.sum("vte_tokens_total", model="up/gpt-4o", type="prompt") == 10 * 7
        assert m.sum("vte_request_duration_seconds_count") == 20
        assert m.sum("vte_in_flight_requests") == 0
        assert m.sum("vte_models_available", provider="up") == 2  # one value, not one per worker
        # The status page's totals come from the same shared view.
        status = httpx.get(gw.url + "/status.json", auth=("ops", ADMIN_KEY)).json()
        assert status["worker"]["multiprocess"] is True
        assert status["totals"]["requests"] == 20
        # Every worker reloads the config: 2 initial loads, then 2 reloads.
        assert m.sum("vte_config_reloads_total", result="success") == 2
        path.write_text(gateway_yaml(upstream.url).replace("models: [echo]", "models: [echo, echo2]"))
        deadline = time.monotonic() + 20
        while scrape(gw.url).sum("vte_config_reloads_total", result="success") < 4:
            assert time.monotonic() < deadline, "not every worker reloaded the config"
            time.sleep(0.1)
        m = scrape(gw.url)
        assert m.sum("vte_config_reloads_total", result="success") == 4
        assert m.sum("vte_models_available", provider="demo") == 2
        for secret in secret_forms():
            assert secret not in m.text
    finally:
        gw.stop()
        shutil.rmtree(mp_dir, ignore_errors=True)


def test_live_gauge_files_of_dead_workers_are_dropped(tmp_path: Path) -> None:
    from vte_proxy.metrics import reap_dead_workers

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid, me = int(dead.stdout), os.getpid()
    names = [f"gauge_livesum_{dead_pid}.db", f"gauge_livemostrecent_{dead_pid}.db", f"counter_{dead_pid}.db",
             f"histogram_{dead_pid}.db", f"gauge_livesum_{me}.db"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    reap_dead_workers(str(tmp_path))
    left = Counter(p.name for p in tmp_path.iterdir())
    # Counts of a dead worker stay counted; only its live gauges go.
    assert set(left) == {f"counter_{dead_pid}.db", f"histogram_{dead_pid}.db", f"gauge_livesum_{me}.db"}


def test_a_provider_removed_and_added_back_is_reported_again() -> None:
    from prometheus_client import REGISTRY, generate_latest

    from vte_proxy import metrics

    def available() -> dict[str, float]:
        m = Scrape(generate_latest(REGISTRY).decode())
        return {lab["provider"]: v for n, lab, v in m.samples if n == "vte_models_available"}

    metrics.set_models_available({"p1": 2, "p2": 1})
    metrics.set_models_available({"p1": 2})
    assert available() == {"p1": 2}
    metrics.set_models_available({"p1": 3, "p2": 4})
    assert available() == {"p1": 3, "p2": 4}
