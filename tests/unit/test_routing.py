"""The routing table: exposed names from prefixes, discovery filters, routes, conflicts."""

from __future__ import annotations

from typing import Any

import pytest

from vte_proxy.config import GatewayConfig
from vte_proxy.routing import RoutingError, build_routing, provider_models


def config(*providers: dict[str, Any], routes: list[dict[str, Any]] | None = None) -> GatewayConfig:
    return GatewayConfig.model_validate({"version": 1, "keys": [{"name": "k", "key": "sk-k"}],
                                         "providers": list(providers), "routes": routes or []})


def openai(name: str, prefix: str = "", models: list[str] | None = None, **discover: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"name": name, "type": "openai", "base_url": "http://127.0.0.1:9/v1", "prefix": prefix,
                         "models": models or []}
    if discover:
        p["discover"] = {"enabled": True, **discover}
    return p


def echo(name: str, prefix: str = "", models: tuple[str, ...] = ("echo",)) -> dict[str, Any]:
    return {"name": name, "type": "echo", "prefix": prefix, "models": list(models)}


def targets(table: Any, name: str) -> list[tuple[str, str]]:
    entry = table.resolve(name)
    assert entry is not None, f"{name} is not routed; have {table.names()}"
    return [(t.provider, t.upstream_model) for t in entry.targets]


def test_prefix_exposes_prefix_slash_model_and_keeps_the_upstream_id() -> None:
    table = build_routing(config(openai("oa", "openai", ["gpt-4o", "gpt-4o-mini"])), {})
    assert table.names() == ["openai/gpt-4o", "openai/gpt-4o-mini"]
    assert targets(table, "openai/gpt-4o") == [("oa", "gpt-4o")]
    assert table.resolve("gpt-4o") is None


def test_empty_prefix_exposes_the_bare_id_even_with_slashes() -> None:
    table = build_routing(config(openai("local", "", ["llama3", "meta/llama-3.1-8b"])), {})
    assert targets(table, "llama3") == [("local", "llama3")]
    assert targets(table, "meta/llama-3.1-8b") == [("local", "meta/llama-3.1-8b")]


def test_counts_per_provider_include_discovered_models() -> None:
    cfg = config(openai("oa", "o", ["gpt-4o"], include=["gpt-*"]), echo("demo", "demo"))
    table = build_routing(cfg, {"oa": ("gpt-4o", "gpt-4.1", "o3")})
    assert dict(table.counts) == {"oa": 2, "demo": 1}


def test_discovery_enables_ids_that_match_include_and_not_exclude() -> None:
    cfg = config(openai("oa", "o", include=["gpt-4*", "o*"], exclude=["*audio*", "*-realtime-*"]))
    table = build_routing(cfg, {"oa": ("gpt-4o", "gpt-4o-audio-preview", "gpt-4o-realtime-preview", "o3",
                                       "text-embedding-3-small", "dall-e-3")})
    assert table.names() == ["o/gpt-4o", "o/o3"]


def test_globs_in_models_filter_discovered_ids_too() -> None:
    cfg = config(openai("oa", "o", ["gpt-4o*", "o3"], exclude=["*mini*"]))
    table = build_routing(cfg, {"oa": ("gpt-4o", "gpt-4o-mini", "gpt-4o-2024-08-06", "gpt-4.1", "o3")})
    assert table.names() == ["o/o3", "o/gpt-4o", "o/gpt-4o-2024-08-06"]


def test_globs_without_a_discovered_list_enable_nothing_but_literals_always_serve() -> None:
    cfg = config(openai("oa", "o", ["gpt-4o*", "o3"], include=["gpt-*"]))
    assert build_routing(cfg, {}).names() == ["o/o3"]
    # a literal model stays even when the upstream no longer lists it (or the filter says no)
    assert build_routing(cfg, {"oa": ("gpt-4o",)}).names() == ["o/o3", "o/gpt-4o"]


def test_discovered_ids_are_ignored_when_discovery_is_off() -> None:
    cfg = config(openai("oa", "o", ["gpt-4o"]))
    assert build_routing(cfg, {"oa": ("gpt-4.1",)}).names() == ["o/gpt-4o"]
    assert provider_models(cfg.providers[0], ("gpt-4.1",)) == ["gpt-4o"]


def test_a_discovered_id_that_is_also_literal_appears_once() -> None:
    cfg = config(openai("oa", "o", ["gpt-4o"], include=["*"]))
    assert build_routing(cfg, {"oa": ("gpt-4o", "o3")}).names() == ["o/gpt-4o", "o/o3"]


def test_a_discovered_name_taken_elsewhere_is_skipped_and_reported_not_fatal() -> None:
    cfg = config(echo("demo", "", ("gpt-4o",)), openai("oa", "", include=["*"]),
                 routes=[{"name": "smart", "targets": ["gpt-4o"]}])
    table = build_routing(cfg, {"oa": ("gpt-4o", "smart", "o3")})
    assert targets(table, "gpt-4o") == [("demo", "gpt-4o")]
    assert targets(table, "o3") == [("oa", "o3")]
    assert table.resolve("smart") is not None and table.resolve("smart").route  # type: ignore[union-attr]
    assert [p for p, _ in table.conflicts] == ["providers[1].discover", "providers[1].discover"]
    assert "'gpt-4o' is already claimed by providers[0].models[0]" in table.conflicts[0][1]
    assert "'smart' is already claimed by routes[0].name" in table.conflicts[1][1]
    assert dict(table.counts) == {"demo": 1, "oa": 1}


def test_two_discovering_providers_with_one_prefix_first_wins() -> None:
    cfg = config(openai("a", "x", include=["*"]), openai("b", "x", include=["*"]))
    table = build_routing(cfg, {"a": ("m1", "m2"), "b": ("m2", "m3")})
    assert [targets(table, n) for n in ("x/m1", "x/m2", "x/m3")] == [[("a", "m1")], [("a", "m2")], [("b", "m3")]]
    assert len(table.conflicts) == 1


def test_route_targets_are_tried_in_the_written_order() -> None:
    cfg = config(openai("oa", "openai", ["gpt-4o"]), echo("demo", "demo"),
                 routes=[{"name": "smart", "targets": ["demo/echo", "openai/gpt-4o"]}])
    table = build_routing(cfg, {})
    assert targets(table, "smart") == [("demo", "echo"), ("oa", "gpt-4o")]
    assert table.names()[-1] == "smart"


def test_route_may_name_models_discovery_has_not_found_yet() -> None:
    cfg = config(openai("oa", "o", include=["gpt-*"]), echo("demo", "demo"),
                 routes=[{"name": "smart", "targets": ["o/gpt-5", "demo/echo"]}])
    assert targets(build_routing(cfg, {}), "smart") == [("demo", "echo")]
    assert targets(build_routing(cfg, {"oa": ("gpt-5",)}), "smart") == [("oa", "gpt-5"), ("demo", "echo")]


@pytest.mark.parametrize(("target", "message"), [
    ("o/o3", "'o/o3' is not an exposed model"),        # excluded by include
    ("nothing/here", "'nothing/here' is not an exposed model"),
    ("other", "'other' is a route; a route targets models"),
])
def test_route_targets_that_can_never_resolve_are_errors(target: str, message: str) -> None:
    cfg = config(openai("oa", "o", include=["gpt-*"]),
                 routes=[{"name": "smart", "targets": [target]}, {"name": "other", "targets": ["o/gpt-4o"]}])
    with pytest.raises(RoutingError) as info:
        build_routing(cfg, {})
    assert info.value.problems == [("routes[0].targets[0]", message)]


@pytest.mark.parametrize(("providers", "routes", "problem"), [
    ([echo("a", "p", ("m",)), echo("b", "p", ("m",))], [],
     ("providers[1].models[0]", "exposed model 'p/m' is already claimed by providers[0].models[0]")),
    ([echo("a", "", ("p/m",)), echo("b", "p", ("m",))], [],
     ("providers[1].models[0]", "exposed model 'p/m' is already claimed by providers[0].models[0]")),
    ([echo("a", "p", ("m", "m"))], [],
     ("providers[0].models[1]", "exposed model 'p/m' is already claimed by providers[0].models[0]")),
    ([echo("a", "p", ("m",))], [{"name": "p/m", "targets": ["p/m"]}],
     ("routes[0].name", "route 'p/m' is already claimed by providers[0].models[0]")),
])
def test_a_name_claimed_twice_is_an_error_at_the_second_claim(providers: list[dict[str, Any]],
                                                              routes: list[dict[str, Any]],
                                                              problem: tuple[str, str]) -> None:
    with pytest.raises(RoutingError) as info:
        build_routing(config(*providers, routes=routes), {})
    assert info.value.problems == [problem]


def test_a_literal_after_a_glob_is_placed_at_its_own_index() -> None:
    cfg = config(openai("a", "p", ["gpt-*", "m"], include=["*"]), echo("b", "p", ("m",)))
    with pytest.raises(RoutingError) as info:
        build_routing(cfg, {})
    assert info.value.problems == [("providers[1].models[0]",
                                    "exposed model 'p/m' is already claimed by providers[0].models[1]")]
