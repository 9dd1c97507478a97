"""gateway.yaml keys of the pools issue: api_keys, proxy, cooldown, route strategies and
weighted targets, breaker, system_prompt (global, provider, key) and error_replies."""

from __future__ import annotations

from pathlib import Path

import pytest

from vte_proxy.config import RouteTarget
from vte_proxy.loader import ConfigError, ConfigIssue, parse_config
from vte_proxy.routing import build_routing

ENV = {"K1": "sk-pool-one-SECRET", "K2": "sk-pool-two-SECRET", "PROXY_PASS": "hunter2-SECRET"}

BASE = """\
version: 1
system_prompt: {text: "Answer in English."}
keys:
  - name: team
    key: sk-team-literal
    system_prompt: {text: "Team rules.", mode: replace}
providers:
  - name: up
    type: openai
    base_url: http://127.0.0.1:9/v1
    api_keys:
      - {name: main, key: "${K1}", weight: 2}
      - {name: spare, key: "${K2}"}
    cooldown: 45s
    proxy: http://user:${PROXY_PASS}@127.0.0.1:3128
    system_prompt: {text: "Provider rules."}
    prefix: up
    models: [gpt-4o, gpt-4o-mini]
  - name: gemini
    type: vertex-express
    api_keys: [{name: only, key: "${K1}"}]
    prefix: gemini
    models: [gemini-2.5-flash]
  - name: demo
    type: echo
    prefix: demo
    models: [echo]
routes:
  - name: smart
    strategy: weighted
    targets: [up/gpt-4o, {model: demo/echo, weight: 3}]
    breaker: {failures: 3, pause: 10s}
  - name: plain
    targets: [up/gpt-4o-mini]
error_replies:
  - {status: 429, message: "Quota used up."}
  - {code: model_not_found, message: "No such model."}
"""


def issues_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, ENV)
    return info.value.issues


def test_every_new_key_is_read() -> None:
    config = parse_config(BASE, ENV).config
    up = config.providers[0]
    assert up.api_key is None and up.api_keys is not None
    assert [(k.name, k.key.get_secret_value(), k.weight) for k in up.api_keys] == [
        ("main", "sk-pool-one-SECRET", 2.0), ("spare", "sk-pool-two-SECRET", 1.0)]
    assert up.cooldown == 45.0 and up.proxy is not None and up.has_key
    assert (up.system_prompt and up.system_prompt.mode) == "prepend"
    assert config.keys[0].system_prompt is not None and config.keys[0].system_prompt.mode == "replace"
    assert config.system_prompt is not None and config.system_prompt.text == "Answer in English."
    smart = config.routes[0]
    assert smart.strategy == "weighted" and smart.targets == (RouteTarget(model="up/gpt-4o"),
                                                              RouteTarget(model="demo/echo", weight=3))
    assert (smart.breaker.failures, smart.breaker.pause) == (3, 10.0)
    assert config.routes[1].strategy == "fallback" and config.routes[1].breaker.failures == 5
    assert [(r.status, r.code) for r in config.error_replies] == [(429, None), (None, "model_not_found")]


def test_routes_carry_strategy_weights_and_breaker_into_the_table() -> None:
    entry = build_routing(parse_config(BASE, ENV).config, {}).entries["smart"]
    assert entry.strategy == "weighted" and entry.weights == (1.0, 3.0)
    assert entry.breaker is not None and entry.breaker.failures == 3


def test_secrets_are_not_in_the_repr() -> None:
    text = repr(parse_config(BASE, ENV).config)
    assert not any(v in text for v in ENV.values())


@pytest.mark.parametrize(("old", "new", "place", "message"), [
    ("    api_keys:\n", "    api_key: sk-x\n    api_keys:\n", "providers[0]", "give api_key or api_keys, not both"),
    ('{name: spare, key: "${K2}"}', '{name: main, key: "${K2}"}', "providers[0].api_keys",
     "api_keys[1].name 'main' is already used by api_keys[0]"),
    ('{name: spare, key: "${K2}"}', '{name: spare, key: ""}', "providers[0].api_keys[1].key", "key is empty"),
    ('{name: spare, key: "${K2}"}', '{name: spare, key: "${K2}", weight: 0}', "providers[0].api_keys[1].weight",
     "Input should be greater than 0"),
    ('{name: spare, key: "${K2}"}', '{name: spare, key: "${K2}", colour: red}', "providers[0].api_keys[1].colour",
     "unknown key 'colour'"),
    ("    api_keys: [{name: only, key: \"${K1}\"}]\n", "", "providers[1]",
     "api_key (or api_keys) is required for type vertex-express"),
    ("proxy: http://user:${PROXY_PASS}@127.0.0.1:3128", "proxy: socks5://user:${PROXY_PASS}@127.0.0.1:1080",
     "providers[0].proxy", "must be an http:// or https:// proxy URL (http://[user:password@]host:port)"),
    ("proxy: http://user:${PROXY_PASS}@127.0.0.1:3128", "proxy: http://user:${PROXY_PASS}@127.0.0.1:3128/x",
     "providers[0].proxy", "a proxy URL has no path or query (http://[user:password@]host:port)"),
    ("strategy: weighted", "strategy: random", "routes[0].strategy",
     "Input should be 'fallback', 'weighted', 'least_busy' or 'latency'"),
    ("{model: demo/echo, weight: 3}", "{model: demo/echo, weight: -1}", "routes[0].targets[1].weight",
     "Input should be greater than 0"),
    ("{model: demo/echo, weight: 3}", "{model: demo/nope}", "routes[0].targets[1]",
     "'demo/nope' is not an exposed model"),
    ("{failures: 3, pause: 10s}", "{failures: -1}", "routes[0].breaker.failures",
     "Input should be greater than or equal to 0"),
    ('system_prompt: {text: "Answer in English."}', 'system_prompt: {text: ""}', "system_prompt.text",
     "String should have at least 1 character"),
    ("mode: replace", "mode: append", "keys[0].system_prompt.mode", "Input should be 'prepend' or 'replace'"),
    ('{status: 429, message: "Quota used up."}', '{message: "Quota used up."}', "error_replies[0]",
     "give status, code or both (a rule must match something)"),
    ('{status: 429, message: "Quota used up."}', '{status: 200, message: "x"}', "error_replies[0].status",
     "Input should be greater than or equal to 400"),
])
def test_each_mistake_is_named_at_its_place(old: str, new: str, place: str, message: str) -> None:
    assert old in BASE
    issues = issues_of(BASE.replace(old, new))
    assert [(i.place, i.message) for i in issues] == [(place, message)]


def test_a_bad_proxy_url_is_never_quoted() -> None:
    issues = issues_of(BASE.replace("http://user:${PROXY_PASS}@127.0.0.1:3128", "ftp://user:${PROXY_PASS}@x"))
    assert "hunter2" not in str(issues)


def test_the_schema_lists_the_new_keys() -> None:
    from vte_proxy.config import GatewayConfig

    schema = GatewayConfig.model_json_schema(mode="validation")
    provider = schema["$defs"]["ProviderConfig"]["properties"]
    assert {"api_keys", "proxy", "cooldown", "system_prompt"} <= set(provider)
    route = schema["$defs"]["RouteConfig"]["properties"]
    assert route["targets"]["items"]["anyOf"][0] == {"type": "string", "description": "An exposed model name."}
    assert {"error_replies", "system_prompt"} <= set(schema["properties"])


def test_check_prints_each_routes_strategy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from vte_proxy.cli import main

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE.replace("  - name: plain\n", "  - name: plain\n    strategy: latency\n"))
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr()
    routes = [line.split("->")[1].strip() for line in out.out.splitlines() if "-> route" in line]
    assert routes == ["route (weighted): up/gpt-4o x1, demo/echo x3", "route (latency): up/gpt-4o-mini"]
    assert not any(v in out.out + out.err for v in ENV.values())
