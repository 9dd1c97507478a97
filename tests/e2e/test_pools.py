"""Upstream key pools, route strategies, circuit breakers, the outbound proxy, system prompts,
error replies and usage estimates, through a real `vte-proxy serve` and scripted upstreams.

One gateway serves the module; each test uses providers and routes of its own (their keys and
circuits keep state), told apart on the shared upstream by the key each provider sends.
"""

from __future__ import annotations

import base64
import signal
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.test_metrics import Scrape, delta, scrape
from tests.support import (
    CLIENT_KEY,
    ForwardProxy,
    GatewayProcess,
    Reply,
    ScriptedUpstream,
    Stream,
    chunk,
    forward_proxy,
    running_gateway,
    serve_app_in_thread,
)
from tests.vertex_upstream import VertexUpstream, text_response

POOL = {"K_OK": "sk-pool-ok-SECRET-1", "K_BUSY": "sk-pool-busy-SECRET-2", "K_BAD": "sk-pool-bad-SECRET-3",
        "T_1": "sk-tired-one-SECRET-4", "T_2": "sk-tired-two-SECRET-5", "PROXY_PASS": "proxy-pw-SECRET-6"}
REPLACER_KEY = "sk-client-replacer-000"


def config(up: str, slow: str, proxy_port: int) -> str:
    return textwrap.dedent(f"""\
        version: 1
        system_prompt: {{text: "Global rules."}}
        keys:
          - {{name: team, key: "${{TEST_CLIENT_KEY}}"}}
          - name: replacer
            key: {REPLACER_KEY}
            system_prompt: {{text: "Key rules.", mode: replace}}
          - {{name: admin, key: sk-admin-key-000, status: true}}
        providers:
          - name: pool
            type: openai
            base_url: {up}
            api_keys:
              - {{name: ok, key: "${{K_OK}}"}}
              - {{name: busy, key: "${{K_BUSY}}", weight: 5}}
              - {{name: bad, key: "${{K_BAD}}", weight: 5}}
            prefix: pool
            models: [gpt-4o]
          - name: tired
            type: openai
            base_url: {up}
            api_keys: [{{name: t1, key: "${{T_1}}"}}, {{name: t2, key: "${{T_2}}"}}]
            prefix: tired
            models: [gpt-4o]
          - {{name: up, type: openai, base_url: "{up}", api_key: sk-up-000, prefix: up, models: [gpt-4o, gpt-4o-mini]}}
          - {{name: slow, type: openai, base_url: "{slow}", api_key: sk-slow-000, prefix: slow, models: [gpt-4o]}}
          - {{name: dead, type: openai, base_url: "{up}", api_key: sk-dead-000, prefix: dead, models: [gpt-4o]}}
          - {{name: dead2, type: openai, base_url: "{up}", api_key: sk-dead2-000, prefix: dead2, models: [gpt-4o]}}
          - name: via
            type: openai
            base_url: {up}
            api_key: sk-via-000
            proxy: http://gw:${{PROXY_PASS}}@127.0.0.1:{proxy_port}
            prefix: via
            models: [gpt-4o]
          - name: sp
            type: openai
            base_url: {up}
            api_key: sk-sp-000
            system_prompt: {{text: "Provider rules."}}
            prefix: sp
            models: [gpt-4o]
          - {{name: demo, type: echo, prefix: demo, models: [echo]}}
        routes:
          - {{name: split, strategy: weighted, targets: [{{model: up/gpt-4o, weight: 3}}, up/gpt-4o-mini]}}
          - {{name: busy, strategy: least_busy, targets: [slow/gpt-4o, up/gpt-4o]}}
          - {{name: quick, strategy: latency, targets: [slow/gpt-4o, up/gpt-4o]}}
          - {{name: guarded, targets: [dead/gpt-4o, up/gpt-4o], breaker: {{failures: 2, pause: 1s}}}}
          - {{name: solo, targets: [dead2/gpt-4o], breaker: {{failures: 1, pause: 60s}}}}
        error_replies:
          - {{code: upstream_keys_cooling, message: "All keys are resting."}}
          - {{code: model_not_found, message: "No such model here."}}
          - {{status: 502, code: truncated, message: "The answer was cut."}}
        """)


@dataclass
class Pools:
    up: ScriptedUpstream
    slow: ScriptedUpstream
    proxy: ForwardProxy
    gateway: GatewayProcess
    http: httpx.Client  # one client for the module: building one per request is slow (TLS context)

    def client(self, key: str = CLIENT_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=key, max_retries=0)

    def chat(self, model: str, key: str = CLIENT_KEY, **extra: object) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], **extra}
        return self.http.post(f"{self.gateway.url}/v1/chat/completions", json=body,
                              headers={"Authorization": f"Bearer {key}"})

    def sent_with(self, key: str, upstream: ScriptedUpstream | None = None) -> list[dict[str, object]]:
        """The bodies the upstream received with upstream key ``key``."""
        return [r.body for r in (upstream or self.up).requests
                if r.headers.get("authorization") == f"Bearer {key}" and isinstance(r.body, dict)]

    def scrape(self) -> Scrape:
        return scrape(self.gateway.url)


@pytest.fixture(scope="module")
def pools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pools]:
    up, slow = ScriptedUpstream().start(), ScriptedUpstream().start()
    slow.delay = 0.5
    with forward_proxy() as proxy:
        text = config(up.url, slow.url, proxy.port)
        with (running_gateway(tmp_path_factory.mktemp("pools"), text, env=POOL) as gw,
              httpx.Client(timeout=20, limits=httpx.Limits(max_connections=16)) as http):
            yield Pools(up, slow, proxy, gw, http)
    up.stop()
    slow.stop()


def no_secrets(text: str) -> None:
    for value in POOL.values():
        assert value not in text


def test_a_pool_serves_every_request_while_keys_cool_down_or_are_rejected(pools: Pools) -> None:
    pools.up.key_replies[POOL["K_BUSY"]] = Reply({"error": {"message": "slow down", "type": "rate_limit_error",
                                                            "code": "rate_limit_exceeded"}}, 429,
                                                 headers={"retry-after": "120"})
    pools.up.key_replies[POOL["K_BAD"]] = Reply({"error": {"message": f"bad key {POOL['K_BAD']}",
                                                           "code": "invalid_api_key"}}, 401)
    client = pools.client()
    for _ in range(30):
        reply = client.chat.completions.create(model="pool/gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert reply.model == "pool/gpt-4o"
    # The rate-limited key rested after its one 429, the rejected one left after its 401.
    assert len(pools.sent_with(POOL["K_BUSY"])) == 1
    assert len(pools.sent_with(POOL["K_BAD"])) == 1
    assert len(pools.sent_with(POOL["K_OK"])) == 30
    m = pools.scrape()
    states = {(lab["upstream_key"], lab["state"]): v for n, lab, v in m.samples
              if n == "vte_upstream_key_state" and lab["provider"] == "pool"}
    assert {k for k, v in states.items() if v == 1} == {("ok", "ready"), ("busy", "cooling"), ("bad", "disabled")}
    assert m.sum("vte_upstream_errors_total", provider="pool", reason="status") == 2
    status = httpx.get(pools.gateway.url + "/status.json", auth=("x", "sk-admin-key-000")).json()
    keys = next(p for p in status["providers"] if p["name"] == "pool")["upstream_keys"]
    assert [(k["name"], k["state"]) for k in keys] == [("ok", "ready"), ("busy", "cooling"), ("bad", "disabled")]
    assert 100 < keys[1]["ready_in"] <= 120
    no_secrets(m.text + str(status) + pools.gateway.logs())


def test_when_every_key_is_cooling_the_client_gets_429_with_the_earliest_retry_after(pools: Pools) -> None:
    for key, wait in (("T_1", "40"), ("T_2", "20")):
        pools.up.key_replies[POOL[key]] = Reply({"error": {"message": "quota", "code": "rate_limit_exceeded"}}, 429,
                                                headers={"retry-after": wait})
    first = pools.chat("tired/gpt-4o")
    assert first.status_code == 429
    assert 19 <= int(first.headers["retry-after"]) <= 20
    assert first.json() == {"error": {"message": "All keys are resting.", "type": "rate_limit_error",
                                      "code": "upstream_keys_cooling"}}
    calls = len(pools.sent_with(POOL["T_1"])) + len(pools.sent_with(POOL["T_2"]))
    assert calls == 2
    again = pools.chat("tired/gpt-4o")  # nothing ready: answered without calling the upstream
    assert again.status_code == 429 and 1 <= int(again.headers["retry-after"]) <= 20
    assert len(pools.sent_with(POOL["T_1"])) + len(pools.sent_with(POOL["T_2"])) == calls
    with pytest.raises(openai.RateLimitError) as info:
        pools.client().chat.completions.create(model="tired/gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert info.value.message.endswith("All keys are resting.")


def test_weighted_splits_traffic_by_weight(pools: Pools) -> None:
    before = pools.scrape()
    start = len(pools.up.requests)
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: pools.chat("split").status_code, range(400)))
    assert codes == [200] * 400
    models = Counter(r.body["model"] for r in pools.up.requests[start:] if isinstance(r.body, dict))
    assert models["gpt-4o"] + models["gpt-4o-mini"] == 400
    assert 0.68 <= models["gpt-4o"] / 400 <= 0.82  # 3:1 (binomial sd 2.2%)
    after = pools.scrape()
    assert delta(before, after, "vte_route_selections_total", route="split", target="up/gpt-4o") == models["gpt-4o"]
    assert delta(before, after, "vte_route_selections_total", route="split",
                 target="up/gpt-4o-mini") == models["gpt-4o-mini"]


def _route_share(pools: Pools, route: str, n: int, workers: int) -> tuple[int, int]:
    """(requests the slow upstream got, requests the fast one got) for ``n`` calls of ``route``."""
    slow_start = len(pools.sent_with("sk-slow-000", pools.slow))
    fast_start = len(pools.sent_with("sk-up-000"))
    with ThreadPoolExecutor(workers) as pool:
        codes = list(pool.map(lambda _: pools.chat(route).status_code, range(n)))
    assert codes == [200] * n
    slow = len(pools.sent_with("sk-slow-000", pools.slow)) - slow_start
    fast = len(pools.sent_with("sk-up-000")) - fast_start
    return slow, fast


def test_least_busy_moves_traffic_away_from_a_slow_target(pools: Pools) -> None:
    slow, fast = _route_share(pools, "busy", 60, 6)
    assert slow + fast == 60
    assert slow <= 60 / 3, (slow, fast)  # fallback would send all 60 to the slow first target


def test_latency_moves_traffic_away_from_a_slow_target(pools: Pools) -> None:
    slow, fast = _route_share(pools, "quick", 30, 1)
    assert slow + fast == 30
    assert slow <= 3, (slow, fast)  # measured once (twice if both were new), then avoided


def test_an_open_circuit_stops_calls_to_a_dead_target_and_a_probe_closes_it(pools: Pools) -> None:
    pools.up.key_replies["sk-dead-000"] = Reply({"error": {"message": "down", "type": "server_error"}}, 503)
    for _ in range(6):
        assert pools.chat("guarded").status_code == 200  # fell over to up/gpt-4o
    assert len(pools.sent_with("sk-dead-000")) == 2  # two failures opened the circuit
    m = pools.scrape()
    assert m.sum("vte_circuit_breaker_state", route="guarded", target="dead/gpt-4o", state="open") == 1
    status = httpx.get(pools.gateway.url + "/status.json", auth=("x", "sk-admin-key-000")).json()
    route = next(m for m in status["models"] if m["id"] == "guarded")
    assert route["strategy"] == "fallback" and route["circuits"][0]["state"] == "open"
    del pools.up.key_replies["sk-dead-000"]  # the target recovers
    time.sleep(1.1)  # the circuit's pause
    assert pools.chat("guarded").status_code == 200
    assert len(pools.sent_with("sk-dead-000")) == 3  # the probe
    assert pools.scrape().sum("vte_circuit_breaker_state", route="guarded", target="dead/gpt-4o",
                              state="closed") == 1
    assert pools.chat("guarded").status_code == 200
    assert len(pools.sent_with("sk-dead-000")) == 4  # back in first place


def test_a_route_whose_every_circuit_is_open_answers_503_at_once(pools: Pools) -> None:
    pools.up.key_replies["sk-dead2-000"] = Reply({"error": {"message": "down"}}, 503)
    assert pools.chat("solo").status_code == 503  # the upstream's own 503
    refused = pools.chat("solo")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "circuit_open"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert len(pools.sent_with("sk-dead2-000")) == 1


def test_requests_reach_the_upstream_through_the_providers_proxy(pools: Pools) -> None:
    seen = len(pools.proxy.seen)
    assert pools.chat("via/gpt-4o").status_code == 200
    streamed = pools.chat("via/gpt-4o", stream=True)
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    lines = pools.proxy.seen[seen:]
    expected = "Basic " + base64.b64encode(f"gw:{POOL['PROXY_PASS']}".encode()).decode()
    assert lines == [(f"POST {pools.up.url}/chat/completions HTTP/1.1", expected)] * 2
    assert len(pools.sent_with("sk-via-000")) == 2
    assert all("proxy-authorization" not in r.headers for r in pools.up.requests)
    no_secrets(pools.gateway.logs() + pools.scrape().text)


def test_system_prompts_global_per_provider_and_per_key(pools: Pools) -> None:
    body = {"messages": [{"role": "system", "content": "Client rules."}, {"role": "user", "content": "hi"}]}
    assert pools.chat("up/gpt-4o", **body).status_code == 200
    assert pools.sent_with("sk-up-000")[-1]["messages"] == [
        {"role": "system", "content": "Global rules.\n\nClient rules."}, {"role": "user", "content": "hi"}]
    assert pools.chat("sp/gpt-4o").status_code == 200
    assert pools.sent_with("sk-sp-000")[-1]["messages"] == [
        {"role": "system", "content": "Provider rules."}, {"role": "user", "content": "hello there"}]
    assert pools.chat("sp/gpt-4o", key=REPLACER_KEY, **body).status_code == 200
    assert pools.sent_with("sk-sp-000")[-1]["messages"] == [
        {"role": "system", "content": "Key rules."}, {"role": "user", "content": "hi"}]
    pools.up.push(Reply({"id": "e", "object": "embedding"}))  # other endpoints are left alone
    pools.http.post(f"{pools.gateway.url}/v1/embeddings", json={"model": "up/gpt-4o", "input": "x"},
               headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert pools.up.last("/embeddings").body == {"model": "gpt-4o", "input": "x"}


def test_error_replies_replace_the_message_and_keep_the_shape(pools: Pools) -> None:
    missing = pools.chat("nope/none")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"message": "No such model here.", "type": "not_found_error",
                                        "code": "model_not_found"}}
    with pytest.raises(openai.NotFoundError) as info:
        pools.client().chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert info.value.message.endswith("No such model here.")
    pools.up.push(Stream([chunk("gpt-4o", {"role": "assistant", "content": "Hel"})], done=False, cut=True))
    cut = pools.chat("up/gpt-4o", stream=True)
    assert cut.status_code == 200
    assert 'data: {"error":{"message":"The answer was cut.","type":"upstream_error","code":"truncated"}}' in cut.text


def test_usage_is_estimated_when_the_upstream_reports_none(pools: Pools) -> None:
    bare = {"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "one two three"},
                         "finish_reason": "stop"}]}
    pools.up.push(Reply(bare))
    before = pools.scrape()
    assert pools.chat("up/gpt-4o").status_code == 200
    after = pools.scrape()
    assert delta(before, after, "vte_usage_missing_total", provider="up") == 1
    assert delta(before, after, "vte_usage_estimated_total", provider="up") == 1
    assert delta(before, after, "vte_tokens_total", provider="up", type="completion") == 3
    # "Global rules." + "hello there": a few tokens, whatever the tokenizer
    assert 3 <= delta(before, after, "vte_tokens_total", provider="up", type="prompt") <= 8


def test_vertex_with_a_pool_and_a_system_prompt(tmp_path: Path) -> None:
    """Vertex takes pool keys in x-goog-api-key (a wrong one answers 403 and leaves the pool),
    and gets the system prompt as systemInstruction through the translation."""
    vertex = VertexUpstream(api_key="vertex-good-SECRET")
    with serve_app_in_thread(vertex.app) as server:
        text = textwrap.dedent(f"""\
            version: 1
            system_prompt: {{text: "Global rules."}}
            keys: [{{name: team, key: "${{TEST_CLIENT_KEY}}"}}]
            providers:
              - name: gemini
                type: vertex-express
                base_url: {server.url}
                api_keys:
                  - {{name: wrong, key: vertex-wrong-SECRET, weight: 100}}
                  - {{name: right, key: vertex-good-SECRET}}
                prefix: gemini
                models: [gemini-2.5-flash]
            """)
        with running_gateway(tmp_path, text) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
            for _ in range(3):
                vertex.push_json(text_response("hello"))
                reply = client.chat.completions.create(model="gemini/gemini-2.5-flash",
                                                       messages=[{"role": "user", "content": "hi"}])
                assert reply.choices[0].message.content == "hello"
            metrics = scrape(gw.url)
            logs = gw.logs()
    keys = [r.headers.get("x-goog-api-key") for r in vertex.requests]
    assert keys == ["vertex-wrong-SECRET"] + ["vertex-good-SECRET"] * 3
    served = [r.body for r in vertex.requests[1:]]
    assert all(b["systemInstruction"] == {"parts": [{"text": "Global rules."}]} for b in served)
    assert metrics.sum("vte_upstream_key_state", provider="gemini", upstream_key="wrong", state="disabled") == 1
    assert "SECRET" not in metrics.text + logs


def test_the_status_page_shows_key_states_and_open_circuits(pools: Pools) -> None:
    """Runs after the pool and circuit tests above: a cooling and a disabled key, an open circuit."""
    from tests.e2e.test_status_page import launch_chromium, playwright_api

    expect, sync_playwright = playwright_api()
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            context = browser.new_context(http_credentials={"username": "ops", "password": "sk-admin-key-000"})
            page = context.new_page()
            page.goto(pools.gateway.url + "/")
            providers, models = page.locator("#providers"), page.locator("#models")
            expect(providers).to_contain_text("ok ready · busy cooling")
            expect(providers).to_contain_text("bad disabled")
            expect(providers).to_contain_text("t1 cooling")
            expect(models).to_contain_text("route (fallback) → dead2/gpt-4o [open]")
            expect(models).to_contain_text("route (weighted) → up/gpt-4o, up/gpt-4o-mini")
            no_secrets(page.content())
        finally:
            browser.close()


def _reloads(pools: Pools) -> float:
    return pools.scrape().sum("vte_config_reloads_total", result="success")


def _wait_for_reload(pools: Pools, before: float) -> None:
    deadline = time.monotonic() + 15
    while _reloads(pools) <= before:
        assert time.monotonic() < deadline, "the config was not reloaded"
        time.sleep(0.1)


def _key_states(pools: Pools, provider: str) -> dict[str, str]:
    return {lab["upstream_key"]: lab["state"] for n, lab, v in pools.scrape().samples
            if n == "vte_upstream_key_state" and lab["provider"] == provider and v == 1}


def test_a_reload_keeps_key_standing_and_sighup_starts_afresh(pools: Pools) -> None:
    """Runs last: it reloads the module's gateway."""
    assert _key_states(pools, "pool") == {"ok": "ready", "busy": "cooling", "bad": "disabled"}
    path = pools.gateway.config_path
    before = _reloads(pools)
    path.write_text(path.read_text() + "# an unrelated edit\n")
    _wait_for_reload(pools, before)
    assert _key_states(pools, "pool") == {"ok": "ready", "busy": "cooling", "bad": "disabled"}
    before = _reloads(pools)
    pools.gateway.signal(signal.SIGHUP)  # a forced reload: every key gets another chance
    _wait_for_reload(pools, before)
    assert _key_states(pools, "pool") == {"ok": "ready", "busy": "ready", "bad": "ready"}
