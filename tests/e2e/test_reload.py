"""Hot reload of a real `vte-proxy serve` process: edits under load, broken edits, a kubelet
ConfigMap swap, SIGHUP, and in-flight requests across a reload.

Nothing here sleeps to assert: every "visible within a few seconds" polls with a deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Stack, gateway_fixture
from tests.support import (
    ADMIN_KEY,
    CLIENT_KEY,
    GatewayProcess,
    ScriptedUpstream,
    Stream,
    chunk,
    eventually,
    gateway_yaml,
    running_gateway,
)


# ---------------------------------------------------------------- helpers (also used by test_discovery)
def write_atomic(path: Path, text: str) -> None:
    """How most tools save: a temporary file in the same directory, renamed over the config."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Probe:
    """Reads a running gateway from the outside, like a user or Prometheus would."""

    gw: GatewayProcess
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.gw.url, timeout=10)

    def models(self) -> set[str]:
        r = self.http.get("/v1/models", headers={"authorization": f"Bearer {CLIENT_KEY}"})
        assert r.status_code == 200, r.text
        return {m["id"] for m in r.json()["data"]}

    def metric(self, name: str, **labels: str) -> float:
        text = self.http.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0

    def reloads(self, result: str) -> float:
        return self.metric("vte_config_reloads_total", result=result)

    def status(self) -> dict[str, Any]:
        r = self.http.get("/status.json", auth=("anyone", ADMIN_KEY))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def chat(self, model: str, stream: bool = False) -> httpx.Response:
        return self.http.post("/v1/chat/completions", headers={"authorization": f"Bearer {CLIENT_KEY}"},
                              json={"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})

    def show(self, models: set[str]) -> set[str]:
        """Wait until the gateway lists exactly ``models``."""
        eventually(lambda: self.models() == models, f"/v1/models == {sorted(models)} (have {sorted(self.models())})")
        return models


class Load:
    """Clients in background threads sending chat requests (streaming and not) in a loop."""

    def __init__(self, url: str, models: list[str], threads: int = 4) -> None:
        self.url, self.models = url, models
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def _one(self, client: httpx.Client, model: str, stream: bool) -> str | None:
        body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello"}]}
        if not stream:
            r = client.post("/v1/chat/completions", json=body)
            if r.status_code != 200 or r.json()["model"] != model:
                return f"{model}: HTTP {r.status_code} {r.text[:200]}"
            return None
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = [line for line in r.iter_lines() if line]
        if r.status_code != 200 or lines[-1:] != ["data: [DONE]"] or any('"error"' in line for line in lines):
            return f"{model} (stream): HTTP {r.status_code} {lines[-2:]}"
        return None

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=20) as c:
            i = n
            while not self._stop.is_set():
                model = self.models[i % len(self.models)]
                try:
                    problem = self._one(c, model, stream=bool(i // len(self.models) % 2))
                except httpx.HTTPError as exc:
                    problem = f"{model}: {exc!r}"
                with self._lock:
                    if problem:
                        self.failures.append(problem)
                    else:
                        self.ok += 1
                i += 1


# ---------------------------------------------------------------- the configs
def openai_provider(name: str, url: str, models: str = "[gpt-4o]", more: str = "") -> str:
    """One ``type: openai`` provider at ``url`` (prefix = name), for gateway_yaml's extra_providers."""
    return (f"- name: {name}\n  type: openai\n  base_url: {url}\n  api_key: ${{TEST_UPSTREAM_KEY}}\n"
            f"  prefix: {name}\n  models: {models}\n{more}")


def base_config(url: str, extra: str = "") -> str:
    """gateway_yaml (providers[0] up, [1] demo) plus providers[2] stable, never edited."""
    return gateway_yaml(url, openai_provider("stable", url) + extra)


BASE_MODELS = {"up/gpt-4o", "up/gpt-4o-mini", "demo/echo", "stable/gpt-4o"}
WITH_GPT5 = ("models: [gpt-4o, gpt-4o-mini]", "models: [gpt-4o, gpt-4o-mini, gpt-5]")


@dataclass
class Setup:
    probe: Probe
    path: Path
    base: str
    upstream: ScriptedUpstream

    def reset(self) -> None:
        write_atomic(self.path, self.base)
        self.probe.show(BASE_MODELS)
        # Also healed: a test that left a broken file behind has its failure cleared (and the heal
        # counted) before the next test reads a counter.
        eventually(self._serves_base, "the base config serves, with no reload error")

    def _serves_base(self) -> bool:
        config = self.probe.status()["config"]
        return config["hash"] == sha12(self.base) and config["last_reload_error"] is None


stack = gateway_fixture(base_config)


@pytest.fixture(scope="module")
def setup(stack: Stack[ScriptedUpstream]) -> Setup:
    return Setup(Probe(stack.gateway), stack.gateway.config_path, stack.config, stack.upstream)


@pytest.fixture
def s(setup: Setup) -> Setup:
    """The module's gateway back on its base config, with a fresh upstream script."""
    setup.upstream.reset()
    setup.reset()
    return setup


# ---------------------------------------------------------------- edits
def test_edits_under_continuous_load_are_visible_and_no_request_fails(s: Setup) -> None:
    p, base = s.probe, s.base
    successes = p.reloads("success")
    edits = [
        (base.replace("models: [gpt-4o, gpt-4o-mini]", "models: [gpt-4o]"), BASE_MODELS - {"up/gpt-4o-mini"}),
        (base.replace(*WITH_GPT5), BASE_MODELS | {"up/gpt-5"}),
        (base.replace("    prefix: up\n", "    prefix: alpha\n"),
         BASE_MODELS - {"up/gpt-4o", "up/gpt-4o-mini"} | {"alpha/gpt-4o", "alpha/gpt-4o-mini"}),
        (base.replace("  - name: limited\n", "  - name: limited2\n"), BASE_MODELS),
        (base, BASE_MODELS),
    ]
    with Load(p.gw.url, ["demo/echo", "stable/gpt-4o"]) as load:
        eventually(lambda: load.ok >= 8, "the load is running")
        for text, models in edits:
            before = load.ok
            write_atomic(s.path, text)
            p.show(models)
            eventually(lambda: p.status()["config"]["hash"] == sha12(text), "the status page shows the new hash")  # noqa: B023
            eventually(lambda: load.ok >= before + 8, "requests keep being answered after the edit")  # noqa: B023
        # an in-place write (truncate, then write) as some editors do
        s.path.write_text(base.replace(*WITH_GPT5))
        p.show(BASE_MODELS | {"up/gpt-5"})
    assert load.failures == []
    assert load.ok >= 50
    assert p.reloads("success") >= successes + len(edits) + 1
    assert p.status()["config"]["last_reload_error"] is None


# ---------------------------------------------------------------- broken edits
def _bad_yaml(text: str) -> tuple[str, str]:
    bad = text.replace("    prefix: demo\n", "    prefix: demo: oops\n")
    return bad, f"(top level) (line {_line(bad, 'demo: oops')}): invalid YAML: mapping values are not allowed here"


def _unknown_type(text: str) -> tuple[str, str]:
    bad = text.replace("type: echo", "type: magic")
    return bad, (f"providers[1].type (line {_line(bad, 'type: magic')}): "
                 "Input should be 'openai', 'anthropic', 'vertex-express'")


def _missing_env(text: str) -> tuple[str, str]:
    bad = text.replace("{X-Custom: custom-value}", "{X-Custom: '${VTE_TEST_NEVER_SET}'}")
    return bad, (f"providers[0].headers.X-Custom (line {_line(bad, 'VTE_TEST_NEVER_SET')}): "
                 "environment variable VTE_TEST_NEVER_SET is not set")


def _duplicate_model(text: str) -> tuple[str, str]:
    bad = text + "  - name: dup\n    type: echo\n    prefix: up\n    models: [gpt-4o]\n"
    return bad, (f"providers[3].models[0] (line {len(bad.splitlines())}): exposed model 'up/gpt-4o' "
                 "is already claimed by providers[0].models[0]")


def _deep_nesting(text: str) -> tuple[str, str]:
    bad = text + "deep: " + "[" * 3000 + "]" * 3000 + "\n"  # a RecursionError in the YAML composer, unlimited
    return bad, f"(top level) (line {_line(bad, 'deep: [')}): the YAML nests deeper than 64 levels (aliases expanded)"


def _alias_bomb(text: str) -> tuple[str, str]:
    lol = ["lol0: &lol0 [" + ", ".join(["lol"] * 10) + "]"]
    lol += [f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 10) + "]" for i in range(1, 11)]
    bad = text + "\n".join(lol) + "\n"  # 10**10 nodes once expanded
    return bad, (f"(top level) (line {_line(bad, 'lol4: &lol4')}): "
                 "the YAML holds more than 100000 nodes once its aliases are expanded")


def _line(text: str, needle: str, nth: int = 1) -> int:
    return [i + 1 for i, line in enumerate(text.splitlines()) if needle in line][nth - 1]


@pytest.mark.parametrize("breakage",
                         [_bad_yaml, _unknown_type, _missing_env, _duplicate_model, _deep_nesting, _alias_bomb],
                         ids=["bad-yaml", "unknown-provider-type", "missing-env-var", "duplicate-model", "deep-nesting",
                              "alias-bomb"])
def test_broken_edit_keeps_serving_the_last_good_config_visibly_until_a_good_edit_heals(
        s: Setup, breakage: Callable[[str], tuple[str, str]]) -> None:
    p = s.probe
    # the broken file also adds up/gpt-5: it must not appear
    broken, located = breakage(s.base.replace(*WITH_GPT5))
    failures, successes = p.reloads("failure"), p.reloads("success")
    good_hash = p.status()["config"]["hash"]

    write_atomic(s.path, broken)
    eventually(lambda: p.reloads("failure") == failures + 1, "vte_config_reloads_total{result=failure} + 1")
    assert p.http.get("/readyz").status_code == 200
    assert p.models() == BASE_MODELS
    assert p.chat("stable/gpt-4o").status_code == 200
    status = p.status()
    assert status["config"]["hash"] == good_hash
    error = status["config"]["last_reload_error"]
    assert error is not None and located in error["message"], error
    assert error["at"] > 0
    eventually(lambda: located in p.gw.logs(), f"the log names the place: {located}")
    assert p.reloads("success") == successes

    healed = s.base.replace(*WITH_GPT5)
    written = time.time()
    write_atomic(s.path, healed)
    p.show(BASE_MODELS | {"up/gpt-5"})
    status = p.status()
    assert status["config"]["last_reload_error"] is None
    assert status["config"]["hash"] == sha12(healed) != good_hash
    assert p.reloads("success") == successes + 1
    assert p.reloads("failure") == failures + 1  # the broken bytes were reported once
    assert p.metric("vte_config_last_reload_success_timestamp_seconds") >= written - 1


def test_reverting_a_broken_edit_to_the_serving_file_clears_the_error(s: Setup) -> None:
    p = s.probe
    failures, successes = p.reloads("failure"), p.reloads("success")
    write_atomic(s.path, s.base.replace("type: echo", "type: magic"))
    eventually(lambda: p.status()["config"]["last_reload_error"], "the failure is shown")
    write_atomic(s.path, s.base)  # git revert: the very bytes being served
    eventually(lambda: p.status()["config"]["last_reload_error"] is None, "the error is cleared")
    assert p.reloads("failure") == failures + 1
    assert p.reloads("success") == successes + 1
    assert p.models() == BASE_MODELS


# ---------------------------------------------------------------- SIGHUP
def test_sighup_forces_a_reload_even_of_unchanged_bytes(s: Setup) -> None:
    p = s.probe
    successes = p.reloads("success")
    loaded_at = p.status()["config"]["loaded_at"]
    p.gw.signal(signal.SIGHUP)
    eventually(lambda: p.reloads("success") == successes + 1, "SIGHUP counted one more successful reload")
    status = p.status()
    assert status["config"]["hash"] == sha12(s.base)
    assert status["config"]["loaded_at"] > loaded_at
    assert p.models() == BASE_MODELS
    assert p.http.get("/readyz").status_code == 200


def test_sighup_with_a_broken_file_counts_a_failure_and_keeps_serving(s: Setup) -> None:
    p = s.probe
    write_atomic(s.path, s.base.replace("type: echo", "type: magic"))
    failures = eventually(lambda: p.reloads("failure") if p.status()["config"]["last_reload_error"] else 0,
                          "the watcher reported the broken edit")
    p.gw.signal(signal.SIGHUP)
    eventually(lambda: p.reloads("failure") == failures + 1, "SIGHUP re-read the broken file")
    assert p.models() == BASE_MODELS
    assert p.gw.proc is not None and p.gw.proc.poll() is None


# ---------------------------------------------------------------- in-flight requests
def test_in_flight_stream_finishes_on_its_state_after_its_provider_is_removed(s: Setup) -> None:
    p = s.probe
    slow = base_config(s.upstream.url, openai_provider("slow", s.upstream.url))
    write_atomic(s.path, slow)
    p.show(BASE_MODELS | {"slow/gpt-4o"})
    words = [f"w{i} " for i in range(12)]
    s.upstream.push(Stream([chunk("gpt-4o", {"role": "assistant", "content": ""}),
                            *(chunk("gpt-4o", {"content": w}) for w in words), chunk("gpt-4o", {}, "stop")],
                           delay=0.25))
    lines: list[str] = []
    first = threading.Event()

    def consume() -> None:
        with httpx.stream("POST", p.gw.url + "/v1/chat/completions", timeout=30,
                          headers={"authorization": f"Bearer {CLIENT_KEY}"},
                          json={"model": "slow/gpt-4o", "stream": True,
                                "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                    first.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    assert first.wait(10), "the stream started"

    write_atomic(s.path, s.base)  # the provider of the running stream is gone from the new config
    p.show(BASE_MODELS)
    logs = p.gw.logs()
    assert reader.is_alive(), "the reload happened while the stream was running"
    assert f"retired config {sha12(slow)}" not in logs, "the old pool was closed under a running stream"
    assert p.chat("slow/gpt-4o").status_code == 404
    assert p.chat("stable/gpt-4o").status_code == 200

    reader.join(30)
    assert not reader.is_alive()
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert not any("error" in e for e in events)
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == "".join(words)
    assert {e["model"] for e in events} == {"slow/gpt-4o"}
    # drained: now the retired providers' connections are closed
    eventually(lambda: f"retired config {sha12(slow)}" in p.gw.logs(), "the old state's pools were closed")
    assert p.http.get("/readyz").status_code == 200
    assert p.chat("stable/gpt-4o", stream=True).status_code == 200


# ---------------------------------------------------------------- Kubernetes ConfigMap
def kubelet_write(directory: Path, text: str, n: int) -> None:
    """What kubelet's AtomicWriter does: a new timestamped folder, a ``..data_tmp`` symlink to
    it renamed over ``..data``, then the old folder removed."""
    folder = directory / f"..2026_11_25_09_{n:02d}_00.{n:09d}"
    folder.mkdir()
    (folder / "gateway.yaml").write_text(text)
    old = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    tmp = directory / "..data_tmp"
    os.symlink(folder.name, tmp)
    os.replace(tmp, directory / "..data")
    if not (directory / "gateway.yaml").is_symlink():
        os.symlink("..data/gateway.yaml", directory / "gateway.yaml")
    if old:
        shutil.rmtree(directory / old)


def test_kubelet_configmap_symlink_swaps_are_picked_up_three_times_in_a_row(
        module_upstream: ScriptedUpstream, tmp_path: Path) -> None:
    directory = tmp_path / "config"
    directory.mkdir()
    base = gateway_yaml(module_upstream.url)
    kubelet_write(directory, base, 0)
    gw = GatewayProcess(directory / "gateway.yaml").start()
    try:
        p = Probe(gw)
        assert p.models() == {"up/gpt-4o", "up/gpt-4o-mini", "demo/echo"}
        versions = [
            (base.replace("models: [gpt-4o, gpt-4o-mini]", "models: [gpt-4o]"), {"up/gpt-4o", "demo/echo"}),
            (base.replace("models: [echo]", "models: [echo, echo2]"),
             {"up/gpt-4o", "up/gpt-4o-mini", "demo/echo", "demo/echo2"}),
            (base.replace("    prefix: up\n", "    prefix: k8s\n"), {"k8s/gpt-4o", "k8s/gpt-4o-mini", "demo/echo"}),
        ]
        for n, (text, models) in enumerate(versions, start=1):
            kubelet_write(directory, text, n)
            p.show(models)
            assert p.status()["config"]["hash"] == sha12(text)
        assert p.reloads("success") == 1 + len(versions)
        assert p.reloads("failure") == 0
    finally:
        gw.stop()


# ---------------------------------------------------------------- several workers
def test_with_several_workers_each_worker_reloads_the_edit(module_upstream: ScriptedUpstream, tmp_path: Path) -> None:
    base = gateway_yaml(module_upstream.url)
    with running_gateway(tmp_path, base, workers=2) as gw:
        p = Probe(gw)
        # in multiprocess mode the counter is the sum over the workers
        eventually(lambda: p.reloads("success") == 2, "both workers loaded the config")
        write_atomic(gw.config_path, base.replace(*WITH_GPT5))
        eventually(lambda: p.reloads("success") == 4, "each worker reloaded the edit once")
        # a new connection for each request, whichever worker accepts it
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=10) as fresh:
            for _ in range(6):
                r = fresh.get(gw.url + "/v1/models", headers={"authorization": f"Bearer {CLIENT_KEY}"})
                assert "up/gpt-5" in {m["id"] for m in r.json()["data"]}
        assert p.reloads("failure") == 0
