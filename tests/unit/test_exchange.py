"""The exchange (vte_proxy.exchange): one request's lifecycle, in process through the ASGI app.

The app is ``create_app`` served in a thread, its upstream a scripted OpenAI-compatible API
reached as ``http://upstream.test:PORT`` through the injected loopback connector. The books are
read from the app's own Accounting object and this process's Prometheus registry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import Stack, gateway_fixture
from tests.support import (
    CLIENT_KEY,
    ECHO_CONFIG,
    HELLO,
    LIMITED_KEY,
    InProcessGateway,
    Reply,
    ScriptedUpstream,
    Stream,
    chunk,
    eventually,
    gateway_yaml,
    inline_secrets,
    metric,
)
from vte_proxy.accounting import Accounting
from vte_proxy.dialect import OPENAI
from vte_proxy.errors import GatewayError
from vte_proxy.exchange import Exchange
from vte_proxy.state import Gateway

stack = gateway_fixture(gateway_yaml, in_process=True)


@pytest.fixture
def gw(s: Stack[ScriptedUpstream]) -> InProcessGateway:
    gateway: InProcessGateway = s.gateway
    return gateway


def chat(gw: InProcessGateway, model: str = "up/gpt-4o", **extra: Any) -> httpx.Response:
    with gw.client() as c:
        return c.post("/v1/chat/completions", json={"model": model, "messages": HELLO, **extra})


def requests_total(code: str, model: str = "up/gpt-4o", provider: str = "up") -> float:
    return metric("vte_requests_total", endpoint="chat/completions", model=model, provider=provider, key="team",
                  code=code)


def reported(gw: InProcessGateway) -> list[dict[str, Any]]:
    """Every entry the accounting hands its subscribers from now on."""
    return reported_to(gw.accounting)


def reported_to(accounting: Accounting) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    accounting.subscribers.add(seen.append)
    return seen


def sentinel(gw: InProcessGateway, seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries reported before a later request's own entry: a request reported twice would show."""
    assert chat(gw, "demo/echo").status_code == 200
    eventually(lambda: any(e["model"] == "demo/echo" for e in seen), "the sentinel request reported")
    gw.accounting.subscribers.discard(seen.append)
    return seen[:-1]


def test_a_request_is_recorded_once_and_reported_once(gw: InProcessGateway) -> None:
    seen = reported(gw)
    before = requests_total("200")
    finished = gw.accounting.finished
    assert chat(gw).status_code == 200
    [entry] = sentinel(gw, seen)
    assert {k: entry[k] for k in ("key", "model", "provider", "endpoint", "status", "stream", "prompt_tokens",
                                  "completion_tokens", "error")} == {
        "key": "team", "model": "up/gpt-4o", "provider": "up", "endpoint": "chat/completions", "status": 200,
        "stream": False, "prompt_tokens": 7, "completion_tokens": 3, "error": None}
    assert gw.accounting.finished == finished + 2  # the request and the sentinel
    assert requests_total("200") == before + 1
    assert list(gw.accounting.recent)[-2] == entry  # the live log holds the same entry


def test_a_stream_is_recorded_once_with_its_time_to_first_token(gw: InProcessGateway) -> None:
    seen = reported(gw)
    ttft_before = metric("vte_time_to_first_token_seconds_count", model="up/gpt-4o", provider="up")
    with gw.client() as c, c.stream("POST", "/v1/chat/completions",
                                    json={"model": "up/gpt-4o", "messages": HELLO, "stream": True}) as r:
        assert r.read().endswith(b"data: [DONE]\n\n")
    [entry] = sentinel(gw, seen)
    assert (entry["status"], entry["stream"], entry["prompt_tokens"], entry["completion_tokens"]) == (200, True, 7, 3)
    assert entry["ttft_ms"] is not None and 0 <= entry["ttft_ms"] <= entry["duration_ms"]
    assert metric("vte_time_to_first_token_seconds_count", model="up/gpt-4o", provider="up") == ttft_before + 1


@pytest.mark.parametrize(("model", "key", "status", "code"), [
    ("up/gpt-4o", "sk-wrong", 401, "invalid_api_key"),
    ("nope/x", CLIENT_KEY, 404, "model_not_found"),
    ("up/gpt-4o", LIMITED_KEY, 403, "model_not_allowed"),
])
def test_an_error_before_the_first_byte_is_the_dialects_json(gw: InProcessGateway, model: str, key: str,
                                                              status: int, code: str) -> None:
    count = gw.accounting.finished
    with gw.client(key) as c:
        r = c.post("/v1/chat/completions", json={"model": model, "messages": HELLO, "stream": True})
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["error"]["code"] == code
    assert r.content == OPENAI.error_body(GatewayError(status, body["error"]["message"], code))
    [entry] = gw.entries_after(count)
    assert (entry["status"], entry["error"]) == (status, code)


def test_an_upstream_error_body_passes_through_before_the_first_byte(gw: InProcessGateway,
                                                                      module_upstream: ScriptedUpstream) -> None:
    error = {"error": {"message": "no such thing", "type": "invalid_request_error", "code": "bad_thing"}}
    module_upstream.push(Reply(error, 400))
    count = gw.accounting.finished
    r = chat(gw, stream=True)
    assert r.status_code == 400 and r.json() == error
    [entry] = gw.entries_after(count)
    assert (entry["status"], entry["provider"], entry["error"]) == (400, "up", "status")


def test_an_error_after_the_first_byte_is_an_sse_error_event_and_logged_with_its_status(
        gw: InProcessGateway, module_upstream: ScriptedUpstream) -> None:
    module_upstream.push(Stream([chunk("gpt-4o", {"role": "assistant", "content": ""}),
                                 chunk("gpt-4o", {"content": "partial"})], done=False))
    count = gw.accounting.finished
    before = requests_total("502")
    with gw.client() as c, c.stream("POST", "/v1/chat/completions",
                                    json={"model": "up/gpt-4o", "messages": HELLO, "stream": True}) as r:
        assert r.status_code == 200  # the stream had started: the status line was sent
        events = [e for e in r.read().decode().split("\n\n") if e]
    assert "partial" in events[-2]
    error = json.loads(events[-1].removeprefix("data: "))
    assert error["error"]["code"] == "truncated" and "data: [DONE]" not in events
    [entry] = gw.entries_after(count)
    assert (entry["status"], entry["error"], entry["stream"]) == (502, "truncated", True)
    assert requests_total("502") == before + 1


def test_the_lease_is_released_when_the_client_leaves_mid_stream(gw: InProcessGateway,
                                                                 module_upstream: ScriptedUpstream) -> None:
    module_upstream.push(Stream([chunk("gpt-4o", {"content": f"t{i} "}) for i in range(400)], delay=0.02))
    count = gw.accounting.finished
    with gw.client() as c, c.stream("POST", "/v1/chat/completions",
                                    json={"model": "up/gpt-4o", "messages": HELLO, "stream": True}) as r:
        lines = r.iter_lines()
        assert "t0" in next(line for line in lines if line)
        assert gw.gateway.state.providers.in_flight == 1
        assert metric("vte_in_flight_requests", provider="up") == 1
    [entry] = gw.entries_after(count)
    assert entry["stream"] is True
    eventually(lambda: gw.gateway.state.providers.in_flight == 0, "the provider-set lease released")
    assert metric("vte_in_flight_requests", provider="up") == 0
    eventually(lambda: module_upstream.open_streams == 0, "the upstream stream closed")


def test_the_websocket_uses_the_same_exchange(gw: InProcessGateway) -> None:
    count = gw.accounting.finished
    ws_url = gw.url.replace("http://", "ws://") + "/v1/chat/completions/ws"
    with connect(ws_url, additional_headers={"authorization": f"Bearer {CLIENT_KEY}"}) as ws:
        ws.send(json.dumps({"model": "up/gpt-4o", "messages": HELLO}))
        frames = []
        while (frame := ws.recv(timeout=10)) != "data: [DONE]":
            frames.append(frame)
        ws.send(json.dumps({"model": "nope/x", "messages": HELLO}))
        refused = ws.recv(timeout=10)
    assert all(f.startswith("data: ") for f in frames)
    assert json.loads(refused)["error"]["code"] == "model_not_found"
    assert refused.encode() == OPENAI.error_body(GatewayError(404, json.loads(refused)["error"]["message"],
                                                              "model_not_found"))
    ok, missing = gw.entries_after(count, 2)
    assert (ok["endpoint"], ok["key"], ok["stream"], ok["status"], ok["prompt_tokens"]) == (
        "chat/completions", "team", True, 200, 7)
    assert (missing["status"], missing["error"], missing["model"]) == (404, "model_not_found", "nope/x")
    assert gw.gateway.state.providers.in_flight == 0


def test_a_websocket_error_after_the_first_frame_is_an_sse_error_frame(gw: InProcessGateway,
                                                                       module_upstream: ScriptedUpstream) -> None:
    module_upstream.push(Stream([chunk("gpt-4o", {"content": "partial"})], cut=True))
    count = gw.accounting.finished
    ws_url = gw.url.replace("http://", "ws://") + "/v1/chat/completions/ws"
    with connect(ws_url, additional_headers={"x-api-key": CLIENT_KEY}) as ws:
        ws.send(json.dumps({"model": "up/gpt-4o", "messages": HELLO}))
        first, last = ws.recv(timeout=10), ws.recv(timeout=10)
    assert "partial" in first
    assert last.startswith("data: ") and json.loads(last[6:])["error"]["code"] == "truncated"
    [entry] = gw.entries_after(count)
    assert (entry["status"], entry["error"]) == (502, "truncated")


class FailingSink:
    """A Sink whose first batch of events raises an exception no layer expects (a bug), then
    records what it is given."""

    def __init__(self) -> None:
        self.started = self.gone = False
        self.batches: list[list[bytes]] = []
        self.ended = False

    async def json(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        raise AssertionError("the answer had started: no JSON answer after it")

    async def open_stream(self, headers: Mapping[str, str]) -> None:
        self.started = True

    async def events(self, batch: list[bytes]) -> None:
        if not self.batches:
            self.batches.append([])
            raise RuntimeError("a bug while writing")
        self.batches.append(batch)

    async def end_stream(self) -> None:
        self.ended = True


async def test_an_unexpected_exception_mid_stream_ends_it_with_an_sse_error_event(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(inline_secrets(ECHO_CONFIG))
    gateway = Gateway(str(tmp_path / "gateway.yaml"))
    gateway.load_initial()
    accounting = Accounting()
    seen = reported_to(accounting)
    sink = FailingSink()

    async def read() -> bytes:
        return json.dumps({"model": "demo/echo", "messages": HELLO, "stream": True}).encode()

    await Exchange(gateway.state, accounting, "chat/completions", OPENAI).run(sink, CLIENT_KEY.encode(), read, {})
    [*_, last] = sink.batches
    assert json.loads(last[0][6:])["error"]["code"] == "internal_error" and sink.ended
    assert (seen[-1]["status"], seen[-1]["error"]) == (500, "internal_error")
    assert gateway.state.providers.in_flight == 0
    await gateway.aclose()
