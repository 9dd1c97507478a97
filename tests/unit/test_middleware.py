"""The plain ASGI middleware (vte_proxy.middleware): the concurrency cap, the last-resort error
guard, and the state they pin for a request (the one the exchange below uses).

In process: the whole app through uvicorn in a thread (cap, guard), or the middleware itself
driven through httpx's ASGI transport (pinning, guard after the first byte).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from tests.conftest import Stack, gateway_fixture
from tests.support import (
    CLIENT_KEY,
    ECHO_CONFIG,
    HELLO,
    InProcessGateway,
    ScriptedUpstream,
    Stream,
    chunk,
    eventually,
    gateway_yaml,
    inline_secrets,
    loopback_connector,
    metric,
)
from vte_proxy.accounting import Accounting
from vte_proxy.config import ProviderConfig
from vte_proxy.http import ProxyEndpoint
from vte_proxy.middleware import GuardMiddleware
from vte_proxy.state import Gateway

BROKEN = """\
- name: broken
  type: openai
  base_url: http://upstream.test:9/v1
  prefix: broken
  models: [m]
"""
INTERNAL_ERROR = {"error": {"message": "internal error", "type": "api_error", "code": "internal_error"}}


def connector(provider: ProviderConfig) -> aiohttp.BaseConnector:
    """Loopback for every provider but ``broken``, whose connector cannot be built: an exception
    no layer expects, raised deep inside a request."""
    if provider.name == "broken":
        raise RuntimeError("no connector for you")
    return loopback_connector(provider)


stack = gateway_fixture(lambda url: gateway_yaml(url, BROKEN, server="max_concurrency: 1\n"), in_process=True,
                        connector=connector)


@pytest.fixture
def gw(s: Stack[ScriptedUpstream]) -> InProcessGateway:
    gateway: InProcessGateway = s.gateway
    return gateway


def overloaded_total() -> float:
    return metric("vte_requests_total", endpoint="chat/completions", model="unknown", provider="-", key="-",
                  code="503")


def test_the_concurrency_cap_answers_503_and_counts_it(gw: InProcessGateway, module_upstream: ScriptedUpstream) -> None:
    module_upstream.push(Stream([chunk("gpt-4o", {"content": f"t{i} "}) for i in range(200)], delay=0.02))
    before = overloaded_total()
    with gw.client() as c, c.stream("POST", "/v1/chat/completions",
                                    json={"model": "up/gpt-4o", "messages": HELLO, "stream": True}) as held:
        lines = held.iter_lines()  # kept: a dropped iterator would close the response
        assert next(line for line in lines if line)  # one request in flight: the cap (1) is reached
        count = gw.accounting.finished
        with gw.client() as other:
            over = other.post("/v1/chat/completions", json={"model": "demo/echo", "messages": HELLO})
            assert other.get("/healthz").status_code == 200  # only /v1 is capped
        assert over.status_code == 503 and over.headers["retry-after"] == "1"
        assert over.json()["error"]["code"] == "overloaded"
        [entry] = gw.entries_after(count)
        assert (entry["status"], entry["error"], entry["endpoint"]) == (503, "overloaded", "chat/completions")
        assert overloaded_total() == before + 1
    eventually(lambda: gw.app.active == 0, "the slot is free again")
    with gw.client() as c:
        assert c.post("/v1/chat/completions", json={"model": "demo/echo", "messages": HELLO}).status_code == 200


def test_an_unexpected_exception_is_a_500_in_the_paths_dialect(gw: InProcessGateway) -> None:
    count = gw.accounting.finished
    with gw.client() as c:
        r = c.post("/v1/chat/completions", json={"model": "broken/m", "messages": HELLO})
        assert r.status_code == 500 and r.headers["content-type"] == "application/json"
        assert r.json() == INTERNAL_ERROR and "RuntimeError" not in r.text and "Traceback" not in r.text
        [entry] = gw.entries_after(count)
        assert (entry["status"], entry["error"], entry["provider"]) == (500, "internal_error", "broken")
        assert gw.gateway.state.providers.in_flight == 0 and metric("vte_in_flight_requests", provider="broken") == 0
        assert c.post("/v1/chat/completions", json={"model": "demo/echo", "messages": HELLO}).status_code == 200


# ---------------------------------------------------------------- the middleware on its own
CONFIG = ECHO_CONFIG


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    path = tmp_path / "gateway.yaml"
    path.write_text(inline_secrets(CONFIG))
    gw = Gateway(str(path))
    gw.load_initial()
    return gw


async def call(app: Any, model: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        return await client.post("/v1/chat/completions", json={"model": model, "messages": HELLO},
                                 headers={"authorization": f"Bearer {CLIENT_KEY}"})


async def test_the_middleware_and_the_exchange_see_the_same_pinned_state(gateway: Gateway, tmp_path: Path) -> None:
    accounting = Accounting()
    endpoint = ProxyEndpoint(gateway, accounting, "chat/completions")

    async def reload_then_answer(scope: Scope, receive: Receive, send: Send) -> None:
        # A reload lands after the middleware took the request's state and before the exchange runs.
        (tmp_path / "gateway.yaml").write_text(inline_secrets(CONFIG.replace("prefix: demo", "prefix: other")))
        assert await gateway.reload()
        await endpoint(scope, receive, send)

    r = await call(GuardMiddleware(reload_then_answer, gateway, accounting), "demo/echo")
    assert r.status_code == 200 and r.json()["model"] == "demo/echo"  # the whole request on the pinned state
    assert (await call(endpoint, "demo/echo")).status_code == 404      # the next request: the new state
    assert (await call(endpoint, "other/echo")).status_code == 200
    await gateway.aclose()


async def test_the_guard_does_not_answer_twice_once_the_response_started(gateway: Gateway) -> None:
    sent: list[Message] = []

    async def fails_mid_answer(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("after the first byte")

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    guard = GuardMiddleware(fails_mid_answer, gateway, Accounting())
    await guard(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start"] and guard.active == 0

    async def fails_at_once(scope: Scope, receive: Receive, send: Send) -> None:
        raise KeyError("before anything")

    sent.clear()
    await GuardMiddleware(fails_at_once, gateway, Accounting())(scope, receive, send)
    assert sent[0]["status"] == 500 and json.loads(sent[1]["body"]) == INTERNAL_ERROR
    await gateway.aclose()
