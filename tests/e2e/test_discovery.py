"""Model discovery against a real upstream list: `discover: {enabled, include, exclude, interval}`
on `openai` providers, through a real `vte-proxy serve` process."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.conftest import Stack, gateway_fixture
from tests.e2e.test_reload import Probe, openai_provider, write_atomic
from tests.support import ScriptedUpstream, eventually, gateway_yaml

UPSTREAM_MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4o-audio-preview", "o3", "text-embedding-3-small"]
STATIC = {"up/gpt-4o", "up/gpt-4o-mini", "demo/echo"}
DISC = '  discover: {enabled: true, include: ["gpt-*", "o*"], exclude: %s, interval: 0.5s}\n'


def config(url: str, exclude: str = '["*audio*"]') -> str:
    """providers[2] `disc` (prefix d) filters with include/exclude; providers[3] `globbed`
    (prefix g) with globs in `models` next to a literal `o1`."""
    return gateway_yaml(url, openai_provider("disc", url, "[]", DISC % exclude).replace("prefix: disc", "prefix: d")
                        + openai_provider("globbed", url, '["gpt-4o*", o1]',
                                          "  discover: {enabled: true, interval: 0.5s}\n").replace(
                            "prefix: globbed", "prefix: g"))


def expected(upstream: list[str], exclude: tuple[str, ...] = ("audio",)) -> set[str]:
    disc = {f"d/{m}" for m in upstream
            if (m.startswith("gpt-") or m.startswith("o")) and not any(x in m for x in exclude)}
    globbed = {"g/o1"} | {f"g/{m}" for m in upstream if m.startswith("gpt-4o")}
    return STATIC | disc | globbed


@dataclass
class Setup:
    probe: Probe
    upstream: ScriptedUpstream
    text: str


@pytest.fixture(scope="module")
def listing_upstream(module_upstream: ScriptedUpstream) -> ScriptedUpstream:
    """The module's upstream, listing UPSTREAM_MODELS before the gateway's first discovery round."""
    module_upstream.models = list(UPSTREAM_MODELS)
    return module_upstream


stack = gateway_fixture(config, upstream="listing_upstream")


@pytest.fixture(scope="module")
def setup(stack: Stack[ScriptedUpstream]) -> Setup:
    return Setup(Probe(stack.gateway), stack.upstream, stack.config)


@pytest.fixture
def s(setup: Setup) -> Setup:
    setup.upstream.models = list(UPSTREAM_MODELS)
    setup.upstream.models_status = 200
    write_atomic(setup.probe.gw.config_path, setup.text)
    setup.probe.show(expected(UPSTREAM_MODELS))
    return setup


def discovery_status(probe: Probe, provider: str) -> dict[str, object]:
    p = next(p for p in probe.status()["providers"] if p["name"] == provider)
    assert p["discovery"] is not None
    d: dict[str, object] = p["discovery"]
    return d


def test_discovered_models_are_exposed_with_their_prefix_from_the_start(setup: Setup) -> None:
    # no waiting: the first list is fetched before the gateway reports ready
    assert setup.probe.models() == expected(UPSTREAM_MODELS)
    assert {"d/gpt-4o", "d/gpt-4o-mini", "d/o3"} <= setup.probe.models()
    assert "d/gpt-4o-audio-preview" not in setup.probe.models()   # exclude
    assert "d/text-embedding-3-small" not in setup.probe.models()  # not included
    assert setup.probe.metric("vte_models_available", provider="disc") == 3


def test_globs_in_models_filter_the_discovered_ids_next_to_literal_models(s: Setup) -> None:
    models = s.probe.models()
    assert {m for m in models if m.startswith("g/")} == {"g/o1", "g/gpt-4o", "g/gpt-4o-mini",
                                                          "g/gpt-4o-audio-preview"}
    assert s.probe.metric("vte_models_available", provider="globbed") == 4


def test_a_discovered_model_is_served_under_its_upstream_id(s: Setup) -> None:
    r = s.probe.chat("d/o3")
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "d/o3"
    assert s.upstream.last("/chat/completions").body["model"] == "o3"


def test_new_upstream_ids_appear_and_dropped_ones_disappear(s: Setup) -> None:
    s.upstream.models = ["gpt-4o", "gpt-4.1", "o4-mini", "gpt-4o-2024-11-20"]
    s.probe.show(expected(s.upstream.models))
    assert "d/gpt-4o-mini" not in s.probe.models() and "d/gpt-4.1" in s.probe.models()
    assert "up/gpt-4o-mini" in s.probe.models()  # a literal model is config, not discovery
    assert s.probe.chat("d/gpt-4o-mini").status_code == 404
    assert s.probe.chat("d/gpt-4.1").status_code == 200
    s.upstream.models = ["o3"]
    s.probe.show(expected(["o3"]))


def test_a_failing_discovery_keeps_the_last_known_list_and_is_reported(s: Setup) -> None:
    p = s.probe
    errors = p.metric("vte_upstream_errors_total", provider="disc", reason="discovery")
    s.upstream.models = ["gpt-4o"]  # would shrink the list, if it could be read
    s.upstream.models_status = 500
    eventually(lambda: p.metric("vte_upstream_errors_total", provider="disc", reason="discovery") >= errors + 2,
               "two failed discovery rounds counted")
    assert p.models() == expected(UPSTREAM_MODELS)
    status = discovery_status(p, "disc")
    assert "HTTP 500" in str(status["last_error"])
    assert "discovery for provider disc failed, keeping 5 known models" in p.gw.logs()
    assert p.http.get("/readyz").status_code == 200

    s.upstream.models_status = 200  # it recovers: the new list applies, the error clears
    p.show(expected(["gpt-4o"]))
    eventually(lambda: discovery_status(p, "disc")["last_error"] is None, "the discovery error is cleared")


def test_a_reload_keeps_the_discovered_list_and_applies_changed_filters(s: Setup) -> None:
    write_atomic(s.probe.gw.config_path, config(s.upstream.url, exclude='["*audio*", "*mini*"]'))
    s.probe.show(expected(UPSTREAM_MODELS, exclude=("audio", "mini")))
    assert {"d/gpt-4o", "d/o3"} <= s.probe.models()
