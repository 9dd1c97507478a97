"""Limits and budgets, black-box: real `vte-proxy serve` processes, a real `redis-server`, a
scripted OpenAI upstream, httpx and the openai SDK as clients.

Two replicas behind one Redis allow exactly a key's rpm between them under concurrent
clients; token limits and budgets stop a key once its real usage (streamed and not) crosses
them; spend in /metrics matches prices x usage; Redis stopped and started again under each
``on_error``.
"""

from __future__ import annotations

import contextlib
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.redis_server import RedisServer
from tests.support import CLIENT_KEY, GatewayProcess, Reply, ScriptedUpstream, Stream, chunk, completion

ADMIN = "sk-admin-key-000"
pytestmark = pytest.mark.usefixtures("redis_server")


def limits_yaml(upstream: str, redis: RedisServer | None, team: str = "", top: str = "", on_error: str = "open") -> str:
    """Key ``team`` (with ``team`` added to its entry, e.g. ``limits: {rpm: 2}``), a status key,
    a scripted ``up`` provider, prices, and the store (``redis`` when given)."""
    store = (f"  store: redis\n  redis: {{url: \"{redis.url}\", on_error: {on_error}, timeout: 2s}}\n"
             if redis else "  store: memory\n")
    return textwrap.dedent(f"""\
        version: 1
        keys:
          - name: team
            key: ${{TEST_CLIENT_KEY}}
            {team}
          - name: admin
            key: {ADMIN}
            status: true
        providers:
          - name: up
            type: openai
            base_url: {upstream}
            api_key: ${{TEST_UPSTREAM_KEY}}
            prefix: up
            models: [gpt-4o, gpt-4o-mini]
        prices:
          "up/gpt-4o": {{input: 2.5, output: 10, cached_input: 1.25}}
          "up/*": {{input: 1, output: 2}}
        """) + top + "limits:\n" + store


@contextlib.contextmanager
def gateways(tmp_path: Path, text: str, n: int = 1) -> Iterator[list[GatewayProcess]]:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    started: list[GatewayProcess] = []
    try:
        for _ in range(n):
            started.append(GatewayProcess(path).start())
        yield started
    finally:
        for gw in started:
            gw.stop()


def chat(gw: GatewayProcess, model: str = "up/gpt-4o", key: str = CLIENT_KEY, **extra: Any) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}, timeout=30)


def away_from_minute_edge(margin: float = 12.0) -> None:
    """rpm/tpm count in fixed minute windows: start a burst well inside one."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_replicas_on_one_redis_allow_exactly_rpm(tmp_path: Path, upstream: ScriptedUpstream,
                                                     redis_server: RedisServer) -> None:
    n = 17
    with gateways(tmp_path, limits_yaml(upstream.url, redis_server, team=f"limits: {{rpm: {n}}}"), n=2) as (a, b):
        away_from_minute_edge()
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda i: timed(chat, (a, b)[i % 2]), range(3 * n)))
        refusals = metric(a, "vte_rate_limited_total", key="team", scope="key", kind="requests") + \
            metric(b, "vte_rate_limited_total", key="team", scope="key", kind="requests")
    ok = [r for r, _ in replies if r.status_code == 200]
    refused = [(r, at) for r, at in replies if r.status_code == 429]
    assert len(ok) == n and len(refused) == 2 * n, [r.status_code for r, _ in replies]
    assert refusals == 2 * n
    for r, at in refused:
        body = r.json()["error"]
        assert (body["code"], body["type"]) == ("rate_limited", "rate_limit_error")
        window_end = (at // 60 + 1) * 60
        retry = int(r.headers["retry-after"])
        assert window_end <= at + retry < window_end + 2  # a retry then lands in the next window
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok)
    assert remaining == list(range(n))  # each success saw its own count, across both replicas
    assert all(r.headers["x-ratelimit-limit-requests"] == str(n) for r in ok)


def timed(call: Any, *args: Any) -> tuple[httpx.Response, float]:
    """The response and the wall-clock time it arrived."""
    response = call(*args)
    return response, time.time()


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached")


BIG = {"prompt_tokens": 400, "completion_tokens": 200, "total_tokens": 600}


def test_tpm_stops_a_key_once_real_usage_crosses_it_streamed_or_not(tmp_path: Path, upstream: ScriptedUpstream,
                                                                   redis_server: RedisServer) -> None:
    text = limits_yaml(upstream.url, redis_server, team="limits: {tpm: 1000}")
    away_from_minute_edge()
    with gateways(tmp_path, text) as (gw,):
        upstream.push(Reply(completion("gpt-4o", usage=BIG)))
        assert chat(gw, max_tokens=10).status_code == 200  # 600 real tokens, not the ~30 reserved
        upstream.push(Stream([chunk("gpt-4o", {"content": "x"}), chunk("gpt-4o", {}, "stop"),
                              chunk("gpt-4o", usage=BIG, choices=False)]))
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
        stream = client.chat.completions.create(model="up/gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                                stream=True, max_tokens=10)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "x"
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="up/gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert err.value.code == "rate_limited" and "tokens per minute" in err.value.message
        assert len(upstream.requests) == 2  # the refused request never reached the provider
        usage = admin_status(gw)["team"]["limits"]["tokens"]
        assert (usage["limit"], usage["used"]) == (1000, 1200)


def admin_status(gw: GatewayProcess) -> dict[str, Any]:
    s = httpx.get(gw.url + "/status.json", auth=("x", ADMIN), timeout=10).json()
    return {k["name"]: k for k in s["keys"]}


def test_budget_stops_a_key_and_spend_in_metrics_matches_prices(tmp_path: Path, upstream: ScriptedUpstream,
                                                                redis_server: RedisServer) -> None:
    # up/gpt-4o: 400 x 2.5 + 200 x 10 = 3000 USD per 1M -> 0.003 USD a request
    text = limits_yaml(upstream.url, redis_server, team="budget: {usd: 0.005, period: day}")
    with gateways(tmp_path, text) as (gw,):
        upstream.push(Reply(completion("gpt-4o", usage=BIG)))
        assert chat(gw).status_code == 200
        upstream.push(Stream([chunk("gpt-4o", {"content": "x"}), chunk("gpt-4o", {}, "stop"),
                              chunk("gpt-4o", usage=BIG, choices=False)]))
        with chat_stream(gw) as r:
            assert r.status_code == 200 and r.read().endswith(b"data: [DONE]\n\n")
        refused = chat(gw)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
        midnight = 86400 - time.time() % 86400
        assert abs(int(refused.headers["retry-after"]) - midnight) <= 2
        assert metric(gw, "vte_cost_usd_total", key="team", model="up/gpt-4o", provider="up") == pytest.approx(0.006)
        assert metric(gw, "vte_budget_spent_usd", key="team") == pytest.approx(0.006)
        assert metric(gw, "vte_rate_limited_total", key="team", scope="key", kind="budget") == 1
        budget = admin_status(gw)["team"]["limits"]["budget"]
        assert (budget["usd"], budget["spent_usd"], budget["period"]) == (0.005, 0.006, "day")
    with gateways(tmp_path, text) as (gw,):  # a restarted gateway: the spend is in Redis
        assert chat(gw).json()["error"]["code"] == "budget_exceeded"


@contextlib.contextmanager
def chat_stream(gw: GatewayProcess) -> Iterator[httpx.Response]:
    with httpx.stream("POST", gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "up/gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True},
                      timeout=30) as r:
        yield r


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_redis_stopped_and_started_again(tmp_path: Path, upstream: ScriptedUpstream, redis_server: RedisServer,
                                         on_error: str) -> None:
    text = limits_yaml(upstream.url, redis_server, team="limits: {rpm: 2}", on_error=on_error)
    away_from_minute_edge()
    with gateways(tmp_path, text) as (gw,):
        assert [chat(gw).status_code for _ in range(3)] == [200, 200, 429]
        redis_server.stop()
        down = [chat(gw) for _ in range(3)]
        if on_error == "open":
            assert [r.status_code for r in down] == [200] * 3  # served without limits
        else:
            assert [r.status_code for r in down] == [503] * 3
            assert down[0].json()["error"]["code"] == "limits_unavailable" and down[0].headers["retry-after"] == "1"
        assert metric(gw, "vte_limits_store_errors_total", store="redis") >= 1
        redis_server.start()  # an empty Redis (no persistence here): limits apply again
        # counted again once a request carries the limit's headers (open mode served without them)
        wait_for(lambda: chat(gw).headers.get("x-ratelimit-limit-requests") == "2")
        away_from_minute_edge(3)
        statuses = [chat(gw).status_code for _ in range(3)]
        assert statuses.count(429) >= 1 and 503 not in statuses


def test_memory_store_limits_one_process_and_headers_on_answers(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    text = limits_yaml(upstream.url, None).replace("limits:\n", "limits:\n  rpm: 1000\n  rules:\n"
                                                   "    - {model: \"up/gpt-4o-mini\", rpm: 1}\n")
    away_from_minute_edge()
    with gateways(tmp_path, text) as (gw,):
        first = chat(gw, model="up/gpt-4o-mini")
        assert first.status_code == 200
        assert (first.headers["x-ratelimit-limit-requests"], first.headers["x-ratelimit-remaining-requests"]) == \
            ("1", "0")
        assert first.headers["x-ratelimit-reset-requests"].endswith("s")
        refused = chat(gw, model="up/gpt-4o-mini")
        assert refused.status_code == 429 and "model up/gpt-4o-mini" in refused.json()["error"]["message"]
        assert chat(gw).headers["x-ratelimit-limit-requests"] == "1000"  # another model, the gateway's limit
        assert metric(gw, "vte_rate_limited_total", key="team", scope="model", kind="requests") == 1


def test_workers_share_the_redis_store(tmp_path: Path, upstream: ScriptedUpstream, redis_server: RedisServer) -> None:
    n = 9
    path = tmp_path / "gateway.yaml"
    path.write_text(limits_yaml(upstream.url, redis_server, team=f"limits: {{rpm: {n}}}"))
    gw = GatewayProcess(path, workers=2).start()
    try:
        away_from_minute_edge()
        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(lambda _: chat(gw).status_code, range(3 * n)))
    finally:
        gw.stop()
    assert statuses.count(200) == n and statuses.count(429) == 2 * n


def test_a_route_skips_a_full_provider_and_refuses_once_when_none_has_room(
        tmp_path: Path, upstream: ScriptedUpstream) -> None:
    text = textwrap.dedent(f"""\
        version: 1
        keys:
          - {{name: team, key: "${{TEST_CLIENT_KEY}}"}}
        providers:
          - {{name: up, type: openai, base_url: "{upstream.url}", api_key: "${{TEST_UPSTREAM_KEY}}", prefix: up,
             models: [gpt-4o], limits: {{rpm: 1}}}}
          - {{name: demo, type: echo, prefix: demo, models: [echo]}}
        routes:
          - {{name: smart, targets: [up/gpt-4o, demo/echo]}}
        limits:
          rules:
            - {{model: demo/echo, rpm: 1}}
        """)
    away_from_minute_edge()
    with gateways(tmp_path, text) as (gw,):
        assert chat(gw, "smart").json()["model"] == "smart"
        assert len(upstream.requests) == 1
        second = chat(gw, "smart")
        assert second.status_code == 200 and len(upstream.requests) == 1  # up is full: echo answered
        assert metric(gw, "vte_rate_limited_total", key="team") == 0  # a skipped target is no refusal
        third = chat(gw, "smart")
        assert third.status_code == 429 and third.json()["error"]["code"] == "rate_limited"
        assert metric(gw, "vte_rate_limited_total", key="team") == 1


def test_client_disconnect_and_upstream_failure_give_back_what_was_held(
        tmp_path: Path, upstream: ScriptedUpstream) -> None:
    text = limits_yaml(upstream.url, None, team="limits: {concurrency: 1, tpm: 5000}")
    away_from_minute_edge()
    with gateways(tmp_path, text) as (gw,):
        upstream.push(Stream([chunk("gpt-4o", {"content": "x"})] * 100, delay=0.2))  # 20 s if read to the end
        with chat_stream(gw) as r:
            assert r.status_code == 200
            next(r.iter_raw())
        started = time.monotonic()
        wait_for(lambda: chat(gw).status_code == 200, timeout=10)
        assert time.monotonic() - started < 10  # the slot came back when the client left, not at the stream's end
        upstream.push(Reply({"error": {"message": "boom", "type": "server_error"}}, status=500))
        assert chat(gw, max_tokens=4000).status_code == 500  # reserved ~4000 tokens, used none
        assert chat(gw, max_tokens=4000).status_code == 200  # refunded, and the slot is free
        used = admin_status(gw)["team"]["limits"]
        assert used["concurrency"]["used"] == 0 and used["tokens"]["used"] < 5000


def test_a_reload_keeps_the_counters_and_applies_a_changed_limit(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    text = limits_yaml(upstream.url, None, team="limits: {rpm: 4}")
    away_from_minute_edge(20)
    with gateways(tmp_path, text) as (gw,):
        assert [chat(gw).status_code for _ in range(3)] == [200] * 3
        (tmp_path / "gateway.yaml").write_text(text.replace("rpm: 4", "rpm: 3"))
        wait_for(lambda: admin_status(gw)["team"]["limits"]["requests"]["limit"] == 3)
        assert admin_status(gw)["team"]["limits"]["requests"]["used"] == 3
        assert chat(gw).status_code == 429
