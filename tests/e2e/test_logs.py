"""Logs of a real gateway process: one request line per request, JSON or text, and no secret
anywhere in the whole log, at debug level and on failures too."""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import Stack, gateway_fixture
from tests.support import (
    ADMIN_KEY,
    CLIENT_KEY,
    LIMITED_KEY,
    THREE_WORDS,
    UPSTREAM_KEY,
    GatewayProcess,
    Reply,
    ScriptedUpstream,
    gateway_yaml,
    running_gateway,
)

WRONG_KEY = "sk-wrong-SECRET-777777"
SECRETS = [CLIENT_KEY, UPSTREAM_KEY, ADMIN_KEY, LIMITED_KEY, WRONG_KEY]


def post(gw: GatewayProcess, model: str, key: str = CLIENT_KEY, **extra: Any) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": THREE_WORDS, **extra}, timeout=10)


def traffic(gw: GatewayProcess, upstream: ScriptedUpstream) -> None:
    """Successes and failures, each carrying a secret somewhere a careless log would print it."""
    assert post(gw, "up/gpt-4o").status_code == 200
    assert post(gw, "demo/echo", stream=True).status_code == 200
    assert post(gw, "up/gpt-4o", WRONG_KEY).status_code == 401
    r = httpx.get(gw.url + "/v1/models", headers={"x-api-key": WRONG_KEY})
    assert r.status_code == 401
    upstream.push(Reply({"error": {"message": f"invalid api key {UPSTREAM_KEY}", "type": "server_error"}}, 500))
    r = post(gw, "up/gpt-4o")
    assert r.status_code == 500 and UPSTREAM_KEY not in r.text
    assert post(gw, "bad\nmodel\r\n2025-01-01 FORGED line").status_code == 404
    assert httpx.get(gw.url + "/status.json", auth=("ops", ADMIN_KEY)).status_code == 200
    assert httpx.get(gw.url + "/", auth=("ops", WRONG_KEY)).status_code == 401
    ws_url = gw.url.replace("http://", "ws://") + "/v1/chat/completions/ws"
    with connect(f"{ws_url}?api_key={CLIENT_KEY}") as ws:  # the key in the URL: uvicorn logs URLs
        ws.send(json.dumps({"model": "demo/echo", "messages": THREE_WORDS}))
        while ws.recv(timeout=10) != "data: [DONE]":
            pass


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        for form in (secret, hashlib.sha256(secret.encode()).hexdigest()):
            assert form not in text, f"{form!r} leaked into the log"


stack = gateway_fixture(gateway_yaml, log_format="json", log_level="debug")


@pytest.fixture(scope="module")
def json_debug_log(stack: Stack[ScriptedUpstream]) -> list[dict[str, Any]]:
    """The log records of this module's gateway after :func:`traffic` (and nothing else) went through it."""
    gw = stack.gateway
    traffic(gw, stack.fresh().upstream)
    requests_logged = 6  # the /v1 requests above, the WebSocket one included
    wait_for_lines(gw, '"logger":"vte_proxy.access"', requests_logged)
    text = gw.logs()
    assert_no_secret(text)
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for line in lines:
        obj = json.loads(line)  # every line is one JSON object
        assert isinstance(obj, dict) and {"time", "level", "logger", "message"} <= set(obj)
        records.append(obj)
    return records


def wait_for_lines(gw: GatewayProcess, needle: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while gw.logs().count(needle) < count:
        assert time.monotonic() < deadline, gw.logs()
        time.sleep(0.05)


def access(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["logger"] == "vte_proxy.access"]


def test_json_request_lines_name_the_request(json_debug_log: list[dict[str, Any]]) -> None:
    lines = access(json_debug_log)
    assert len(lines) == 6
    ok = lines[0]
    assert ok["level"] == "info" and ok["message"] == "request"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ok["time"])
    assert {k: ok[k] for k in ("key", "model", "provider", "endpoint", "status", "stream", "prompt_tokens",
                               "completion_tokens", "ttft_ms", "error")} == {
        "key": "team", "model": "up/gpt-4o", "provider": "up", "endpoint": "chat/completions", "status": 200,
        "stream": False, "prompt_tokens": 7, "completion_tokens": 3, "ttft_ms": None, "error": None}
    assert isinstance(ok["duration_ms"], float) and ok["duration_ms"] >= 0
    streamed = lines[1]
    assert (streamed["model"], streamed["provider"], streamed["stream"]) == ("demo/echo", "demo", True)
    assert (streamed["prompt_tokens"], streamed["completion_tokens"]) == (3, 3)
    assert isinstance(streamed["ttft_ms"], float) and 0 <= streamed["ttft_ms"] <= streamed["duration_ms"]


def test_json_failures_are_logged_by_name_without_the_key(json_debug_log: list[dict[str, Any]]) -> None:
    lines = access(json_debug_log)
    unauthorized = lines[2]
    assert (unauthorized["status"], unauthorized["key"], unauthorized["error"]) == (401, "-", "invalid_api_key")
    upstream_failed = lines[3]
    assert (upstream_failed["status"], upstream_failed["key"], upstream_failed["provider"]) == (500, "team", "up")
    unknown = lines[4]
    assert unknown["status"] == 404 and unknown["model"] == "bad\nmodel\r\n2025-01-01 FORGED line"
    ws = lines[5]
    assert (ws["status"], ws["model"], ws["key"], ws["stream"]) == (200, "demo/echo", "team", True)
    # The provider failure is also reported at warning, by provider and reason.
    warnings = [r for r in json_debug_log if r["level"] == "warning" and r["logger"] == "vte_proxy.pipeline"]
    assert any("provider up failed" in r["message"] for r in warnings)
    # uvicorn's WebSocket line keeps the path, not the query string that carried the key.
    assert any("/v1/chat/completions/ws?[redacted]" in r["message"] for r in json_debug_log)


def test_debug_level_logs_more_and_still_no_secret(json_debug_log: list[dict[str, Any]]) -> None:
    tries = [r["message"] for r in json_debug_log if r["level"] == "debug" and r["logger"] == "vte_proxy.dispatch"]
    assert "chat/completions key=team model=up/gpt-4o: sending to provider up" in tries
    assert not any(r["message"].startswith(("< ", "> ")) for r in json_debug_log)  # no WebSocket wire trace
    assert_no_secret(json.dumps(json_debug_log))


def test_text_lines_are_readable_one_per_request(module_upstream: ScriptedUpstream, tmp_path: Path) -> None:
    with running_gateway(tmp_path, gateway_yaml(module_upstream.url), log_format="text") as gw:
        traffic(gw, module_upstream)
        wait_for_lines(gw, "vte_proxy.access", 6)
    text = gw.logs()
    assert_no_secret(text)
    lines = [line for line in text.splitlines() if "vte_proxy.access" in line]
    assert len(lines) == 6
    assert re.search(r"INFO +vte_proxy\.access: 200 chat/completions key=team model=up/gpt-4o provider=up "
                     r"duration=[\d.]+ms tokens=7\+3$", lines[0]), lines[0]
    assert re.search(r": 200 chat/completions key=team model=demo/echo provider=demo duration=[\d.]+ms "
                     r"ttft=[\d.]+ms tokens=3\+3 stream$", lines[1]), lines[1]
    assert re.search(r": 401 chat/completions key=- model=unknown provider=- duration=[\d.]+ms tokens=- "
                     r"error=invalid_api_key$", lines[2]), lines[2]
    assert "key=team model=up/gpt-4o provider=up" in lines[3] and ": 500 " in lines[3]
    # Client text cannot forge a line: control characters are escaped, the value quoted.
    assert 'model="bad\\nmodel\\r\\n2025-01-01 FORGED line"' in lines[4]
    assert not any(line.startswith(("model", "2025-01-01 FORGED")) for line in text.splitlines())
