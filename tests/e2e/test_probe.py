"""`vte-proxy probe`: every key of a pool gets a models list and a one-token chat, straight from
the config file (no server); exit 1 names a failing key by its name, never its value."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, Hang, Reply, ScriptedUpstream, forward_proxy, free_port, serve_app_in_thread
from tests.vertex_upstream import VertexUpstream, text_response

KEYS = {"GOOD_1": "sk-good-one-SECRET-111", "GOOD_2": "sk-good-two-SECRET-222", "BAD": "sk-revoked-SECRET-999",
        "PROXY_PASS": "proxy-pw-SECRET-777"}

def config(url: str, proxy: str = "") -> str:
    proxy_line = f"    proxy: {proxy}\n" if proxy else ""
    return (
        "version: 1\n"
        "keys: [{name: team, key: sk-client-000}]\n"
        "providers:\n"
        "  - name: up\n"
        "    type: openai\n"
        f"    base_url: {url}\n"
        "    api_keys:\n"
        '      - {name: first, key: "${GOOD_1}"}\n'
        '      - {name: revoked, key: "${BAD}", weight: 2}\n'
        '      - {name: third, key: "${GOOD_2}"}\n'
        f"{proxy_line}"
        "    prefix: up\n"
        "    models: [gpt-4o, gpt-4o-mini]\n"
        "  - name: demo\n"
        "    type: echo\n"
        "    prefix: demo\n"
        "    models: [echo]\n")


def probe(tmp_path: Path, text: str, *targets: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "vte_proxy", "probe", "--config", str(path), *targets],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **KEYS})

def no_secret(result: subprocess.CompletedProcess[str]) -> None:
    for value in KEYS.values():
        assert value not in result.stdout + result.stderr

def rows(result: subprocess.CompletedProcess[str]) -> list[list[str]]:
    return [line.split()[:6] for line in result.stdout.splitlines()[:-1]]

def test_a_rejected_pool_key_fails_the_probe_by_its_name(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    upstream.key_replies[KEYS["BAD"]] = Reply({"error": {"message": f"Incorrect API key provided: {KEYS['BAD']}",
                                                         "type": "invalid_request_error",
                                                         "code": "invalid_api_key"}}, 401)
    result = probe(tmp_path, config(upstream.url))
    assert result.returncode == 1, result.stderr
    no_secret(result)
    assert rows(result) == [
        ["up", "key", "first", "models", "ok", rows(result)[0][5]],
        ["up", "key", "first", "chat", "ok", rows(result)[1][5]],
        ["up", "key", "revoked", "models", "HTTP", "401"],
        ["up", "key", "revoked", "chat", "HTTP", "401"],
        ["up", "key", "third", "models", "ok", rows(result)[4][5]],
        ["up", "key", "third", "chat", "ok", rows(result)[5][5]],
        ["demo", "key", "-", "chat", "ok", rows(result)[6][5]],
    ]
    lines = result.stdout.splitlines()
    assert "2 model(s): gpt-4o, gpt-4o-mini" in lines[0] and lines[1].endswith("ms  gpt-4o")
    assert "(invalid_api_key)" in lines[2]
    assert lines[-1] == "probe: 2 provider(s), 4 key(s), 7 check(s), 2 failed"
    # Each key was really used: the upstream saw every one of them on both paths.
    used = [(r.method, r.headers["authorization"].removeprefix("Bearer ")) for r in upstream.requests]
    assert used == [(m, KEYS[k]) for k in ("GOOD_1", "BAD", "GOOD_2") for m in ("GET", "POST")]
    chat = upstream.last("/chat/completions").body
    assert chat["model"] == "gpt-4o" and chat["max_tokens"] == 1 and chat["messages"][0]["role"] == "user"

def test_all_good_exits_0(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    result = probe(tmp_path, config(upstream.url))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "probe: 2 provider(s), 4 key(s), 7 check(s), all ok"
    no_secret(result)

def test_named_provider_and_model(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    result = probe(tmp_path, config(upstream.url), "up/gpt-4o-mini")
    assert result.returncode == 0, result.stdout + result.stderr
    assert {r[0] for r in rows(result)} == {"up"}
    assert all(r.body["model"] == "gpt-4o-mini" for r in upstream.requests if r.method == "POST")

def test_an_unknown_provider_is_an_error(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    result = probe(tmp_path, config(upstream.url), "nope")
    assert result.returncode == 1
    assert "no provider named 'nope'" in result.stderr and upstream.requests == []

def test_an_unreachable_provider_fails(tmp_path: Path) -> None:
    result = probe(tmp_path, config(f"http://127.0.0.1:{free_port()}/v1"), "up")
    assert result.returncode == 1
    assert [r[4] for r in rows(result)] == ["unreachable"] * 6
    no_secret(result)

def test_an_upstream_failure_on_chat_only(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    upstream.push(Reply({"error": {"message": "overloaded", "type": "server_error", "code": None}}, 503))
    result = probe(tmp_path, config(upstream.url), "up")
    assert result.returncode == 1
    assert [r[4:6] for r in rows(result)][:2] == [["ok", rows(result)[0][5]], ["HTTP", "503"]]

def test_probe_goes_through_the_providers_proxy_with_its_credentials(upstream: ScriptedUpstream,
                                                                     tmp_path: Path) -> None:
    with forward_proxy() as proxy:
        text = config(upstream.url, proxy=f"http://probe:${{PROXY_PASS}}@127.0.0.1:{proxy.port}")
        result = probe(tmp_path, text, "up")
        seen: list[tuple[str, str | None]] = list(proxy.seen)
    assert result.returncode == 0, result.stdout + result.stderr
    no_secret(result)
    expected = "Basic " + base64.b64encode(f"probe:{KEYS['PROXY_PASS']}".encode()).decode()
    assert len(seen) == 6 and all(auth == expected for _, auth in seen)
    assert seen[0][0] == f"GET {upstream.url}/models HTTP/1.1"
    assert len(upstream.requests) == 6
    assert all("proxy-authorization" not in r.headers for r in upstream.requests)

def test_a_refusing_proxy_is_unreachable_and_not_quoted(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    port = free_port()
    result = probe(tmp_path, config(upstream.url, proxy=f"http://probe:${{PROXY_PASS}}@127.0.0.1:{port}"), "up")
    assert result.returncode == 1 and upstream.requests == []
    assert [r[4] for r in rows(result)] == ["unreachable"] * 6
    no_secret(result)


def test_timeout_caps_the_wait_for_a_silent_upstream(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    upstream.push(Hang(30))
    result = probe(tmp_path, config(upstream.url), "--timeout", "1", "up/gpt-4o")
    assert result.returncode == 1
    chat = rows(result)[1]
    assert chat[3:5] == ["chat", "unreachable"]
    assert "did not answer within 1s" in result.stdout.splitlines()[1]


def test_vertex_pool_keys_are_probed_with_a_chat(tmp_path: Path) -> None:
    vertex = VertexUpstream(api_key=KEYS["GOOD_1"])
    vertex.push_json(text_response("ok"))
    with serve_app_in_thread(vertex.app) as server:
        text = ("version: 1\nkeys: [{name: team, key: sk-client-000}]\nproviders:\n"
                f"  - name: gemini\n    type: vertex-express\n    base_url: {server.url}\n"
                '    api_keys: [{name: good, key: "${GOOD_1}"}, {name: stale, key: "${BAD}"}]\n'
                "    prefix: gemini\n    models: [gemini-2.5-flash]\n")
        result = probe(tmp_path, text)
    assert result.returncode == 1
    assert [r[:6] for r in rows(result)] == [["gemini", "key", "good", "chat", "ok", rows(result)[0][5]],
                                             ["gemini", "key", "stale", "chat", "HTTP", "502"]]
    # Vertex's shaper answers clients 502 for a refused key; the line says what Vertex said.
    assert "refused the gateway's credentials (HTTP 403)" in result.stdout.splitlines()[1]
    assert vertex.requests[0].body["generationConfig"]["maxOutputTokens"] == 1
    no_secret(result)
