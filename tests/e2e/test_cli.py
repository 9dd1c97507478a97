"""`vte-proxy check` (offline validation for CI), `vte-proxy schema` (for editors), and where
`vte-proxy serve` listens with the example config."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support import ROOT, free_port, gateway_yaml
from vte_proxy import __version__
from vte_proxy.cli import main

ENV = {"TEST_CLIENT_KEY": "sk-client", "TEST_UPSTREAM_KEY": "sk-upstream"}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vte_proxy", *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", **(env or {})}, timeout=30)


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result = run("schema")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_check_valid_config_exits_0_and_prints_the_routing_table(tmp_path: Path) -> None:
    text = gateway_yaml("http://127.0.0.1:9/v1", routes="- name: smart\n  targets: [up/gpt-4o, demo/echo]\n")
    result = run("check", write(tmp_path, text), env=ENV)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.match(r".*gateway\.yaml: valid \(sha256 [0-9a-f]{12}\), 2 provider\(s\), 3 key\(s\)$", lines[0])
    table = [re.split(r"\s+->\s+", line.strip()) for line in lines[1:]]
    assert table == [["up/gpt-4o", "up: gpt-4o"], ["up/gpt-4o-mini", "up: gpt-4o-mini"], ["demo/echo", "demo: echo"],
                     ["smart", "route: up/gpt-4o, demo/echo"]]
    assert result.stderr == ""


def test_check_invalid_config_exits_1_with_every_error_and_its_line(tmp_path: Path) -> None:
    text = (gateway_yaml("ftp://nowhere/v1")
            .replace("type: echo", "type: magic")
            .replace("    status: true\n", "    status: true\n    colour: red\n"))
    result = run("check", write(tmp_path, text))  # TEST_* variables unset too
    assert result.returncode == 1
    assert result.stdout == ""
    err = result.stderr.splitlines()
    assert err[0].endswith("gateway.yaml: 5 error(s)")
    lines = text.splitlines()

    def at(needle: str) -> int:
        return next(i + 1 for i, line in enumerate(lines) if needle in line)

    assert [e.strip() for e in err[1:]] == [
        f"keys[0].key (line {at('${TEST_CLIENT_KEY}')}): environment variable TEST_CLIENT_KEY is not set",
        f"keys[2].colour (line {at('colour: red')}): unknown key 'colour'",
        f"providers[0].base_url (line {at('base_url:')}): must be an http:// or https:// URL",
        f"providers[0].api_key (line {at('api_key:')}): environment variable TEST_UPSTREAM_KEY is not set",
        f"providers[1].type (line {at('type: magic')}): "
        "Input should be 'openai', 'anthropic', 'vertex-express' or 'echo'",
    ]


def test_check_of_a_missing_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "nope.yaml")]) == 1
    assert "config file not found" in capsys.readouterr().err


def _bomb(levels: int = 10) -> str:
    """A YAML alias bomb: 10 ** levels nodes once its aliases are expanded, in under 1 KB."""
    rows = ["lol0: &lol0 [" + ", ".join(["lol"] * 10) + "]"]
    rows += [f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize(("hostile", "needle", "message"), [
    ("deep: " + "[" * 3000 + "]" * 3000 + "\n", "deep: [", "the YAML nests deeper than 64 levels (aliases expanded)"),
    ("loop: &loop {me: *loop}\n", "loop:",
     "an alias inside the node its anchor names (a recursive alias) is not allowed"),
    (_bomb(), "lol4: &lol4", "the YAML holds more than 100000 nodes once its aliases are expanded"),
], ids=["deep-nesting", "recursive-alias", "alias-bomb"])
def test_check_refuses_a_hostile_yaml_file_with_a_located_error(
        tmp_path: Path, env: None, capsys: pytest.CaptureFixture[str], hostile: str, needle: str, message: str) -> None:
    text = gateway_yaml("http://127.0.0.1:9/v1") + hostile
    path = write(tmp_path, text)
    assert main(["check", path]) == 1
    line = next(i + 1 for i, row in enumerate(text.splitlines()) if needle in row)
    assert capsys.readouterr().err.splitlines() == [f"{path}: 1 error(s)", f"  (top level) (line {line}): {message}"]


def test_check_refuses_a_config_over_1_mib(tmp_path: Path, env: None, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, gateway_yaml("http://127.0.0.1:9/v1") + "#" * 1024 * 1024 + "\n")
    assert main(["check", path]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: 1 error(s)",
        "  (top level): the file is larger than 1024 KiB (1048576 bytes), the most a config may be"]


def test_check_allow_missing_env_warns_and_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ENV:
        monkeypatch.delenv(k, raising=False)
    path = write(tmp_path, gateway_yaml("http://127.0.0.1:9/v1"))
    assert main(["check", path]) == 1
    capsys.readouterr()
    assert main(["check", "--allow-missing-env", path]) == 0
    out = capsys.readouterr()
    assert "warning: keys[0].key (line 5): environment variable TEST_CLIENT_KEY is not set" in out.err
    assert "up/gpt-4o" in out.out


def test_check_never_touches_the_network_even_with_discovery(tmp_path: Path, env: None,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    def no_network(*args: object, **kw: object) -> None:
        raise AssertionError("vte-proxy check opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    text = gateway_yaml("http://127.0.0.1:9/v1", extra_providers="""\
        - name: far
          type: openai
          base_url: http://10.255.255.1/v1
          prefix: far
          models: ["gpt-*", o3]
          discover: {enabled: true, include: ["gpt-4*"], exclude: ["*audio*"], interval: 1s}
        """)
    assert main(["check", write(tmp_path, text)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  far/o3 +-> far: o3$", out, re.M)
    assert "(far: more models from discovery at run time, include ['gpt-4*'], exclude ['*audio*'], " \
           "matching ['gpt-*'])" in out


def test_check_with_discovery_at_an_unroutable_url_finishes_as_a_process(tmp_path: Path) -> None:
    text = gateway_yaml("http://10.255.255.1/v1").replace(
        "    models: [gpt-4o, gpt-4o-mini]\n", "    models: []\n    discover: {enabled: true, interval: 1s}\n")
    result = run("check", write(tmp_path, text), env=ENV)  # the 30 s timeout would fire on a network wait
    assert result.returncode == 0, result.stderr
    assert "up: more models from discovery" in result.stdout


def test_version_flag_prints_the_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"vte-proxy {__version__}"


def test_schema_is_a_valid_json_schema(schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"version", "keys", "providers"}


def test_schema_accepts_the_example_and_the_test_config(schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    example = yaml.safe_load((ROOT / "gateway.yaml.example").read_text())
    assert list(validator.iter_errors(example)) == []
    full = yaml.safe_load(gateway_yaml("http://127.0.0.1:9/v1", routes="- name: s\n  targets: [demo/echo]\n",
                                       server="shutdown_grace: 30s\n"))
    full["providers"][0].update(discover={"enabled": True, "interval": "10m", "include": ["gpt-*"]},
                                timeouts={"connect": "5s", "first_byte": 60, "idle": "250ms"})
    assert list(validator.iter_errors(full)) == []


@pytest.mark.parametrize(("change", "where"), [
    (lambda d: d["providers"][0].update(colour="red"), ["providers", 0]),
    (lambda d: d.update(loggin={}), []),
    (lambda d: d["providers"][0].update(type="magic"), ["providers", 0, "type"]),
    (lambda d: d["providers"][0].update(timeouts={"idle": "ten minutes"}), ["providers", 0, "timeouts", "idle"]),
])
def test_schema_rejects_what_the_loader_rejects(schema: dict[str, Any], change: Any, where: list[Any]) -> None:
    data = yaml.safe_load((ROOT / "gateway.yaml.example").read_text())
    change(data)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(data))
    assert errors
    assert any(list(e.absolute_path) == where for e in errors), [(list(e.absolute_path), e.message) for e in errors]


def test_committed_gateway_schema_json_is_the_output_of_vte_proxy_schema(schema: dict[str, Any]) -> None:
    committed = ROOT / "gateway.schema.json"
    assert committed.exists(), "run: .venv/bin/vte-proxy schema > gateway.schema.json"
    assert committed.read_text() == run("schema").stdout, \
        "gateway.schema.json is stale; run: .venv/bin/vte-proxy schema > gateway.schema.json"


def test_the_example_points_editors_at_the_schema() -> None:
    first = (ROOT / "gateway.yaml.example").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=./gateway.schema.json"


def listening_addresses(port: int) -> set[str]:
    """The local IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


def test_serve_of_the_example_listens_on_loopback_only(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {"PATH": "/usr/bin:/bin", "VTE_PORT": str(port)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vte_proxy", "serve", "--config", "gateway.yaml.example"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not listening_addresses(port):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert listening_addresses(port) == {"127.0.0.1"}
        assert "public demo key sk-demo: listening on 127.0.0.1 only" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(15)
