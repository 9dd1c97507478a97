"""CORS in-process: the middleware over a stub application, with a config that can change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import Receive, Scope, Send

from vte_proxy.config import CorsConfig
from vte_proxy.cors import CORSMiddleware

ORIGIN = "http://127.0.0.1:8123"
SDK_HEADERS = ("authorization, content-type, x-stainless-arch, x-stainless-lang, x-stainless-os, "
               "x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, "
               "x-stainless-runtime-version, x-stainless-timeout")


@dataclass
class Config:
    cors: CorsConfig


@dataclass
class State:
    config: Config


@dataclass
class StubGateway:
    state: State
    calls: list[str] = field(default_factory=list)


def client(cors: CorsConfig) -> tuple[httpx.AsyncClient, StubGateway]:
    gateway = StubGateway(State(Config(cors)))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        gateway.calls.append(scope["method"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-request-id", b"req_1")]})
        await send({"type": "http.response.body", "body": b"{}"})

    mw: Any = CORSMiddleware(app, gateway)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://gw"), gateway


def preflight(requested: str | None = SDK_HEADERS, origin: str = ORIGIN) -> dict[str, str]:
    h = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    if requested is not None:
        h["Access-Control-Request-Headers"] = requested
    return h


async def test_preflight_reflects_the_headers_the_sdk_asks_for() -> None:
    c, gw = client(CorsConfig(allow_origins=(ORIGIN,)))
    r = await c.options("/v1/chat/completions", headers=preflight())
    assert r.status_code == 204 and not gw.calls
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["access-control-allow-headers"] == SDK_HEADERS
    assert "Access-Control-Request-Headers" in r.headers["vary"]
    assert "access-control-allow-credentials" not in r.headers


async def test_reflection_keeps_only_header_tokens() -> None:
    c, _ = client(CorsConfig(allow_origins=("*",)))
    r = await c.options("/v1/chat/completions", headers=preflight("X-Good, bad header, x\x7f, , " + "y" * 200))
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-headers"] == "x-good"
    many = ", ".join(f"x-{i}" for i in range(100))
    r = await c.options("/v1/chat/completions", headers=preflight(many))
    assert len(r.headers["access-control-allow-headers"].split(", ")) == 64
    r = await c.options("/v1/chat/completions", headers=preflight(None))
    assert "access-control-allow-headers" not in r.headers


async def test_an_explicit_allow_headers_list_replaces_reflection() -> None:
    c, _ = client(CorsConfig(allow_origins=(ORIGIN,), allow_headers=("authorization", "content-type")))
    r = await c.options("/v1/chat/completions", headers=preflight())
    assert r.headers["access-control-allow-headers"] == "authorization, content-type"


async def test_other_origins_get_nothing_and_reach_the_app() -> None:
    c, gw = client(CorsConfig(allow_origins=(ORIGIN,)))
    r = await c.options("/v1/chat/completions", headers=preflight(origin="https://evil.example"))
    assert gw.calls == ["OPTIONS"] and not any(k.startswith("access-control") for k in r.headers)
    c, gw = client(CorsConfig())
    r = await c.options("/v1/chat/completions", headers=preflight())
    assert gw.calls == ["OPTIONS"] and not any(k.startswith("access-control") for k in r.headers)


async def test_answers_to_an_allowed_origin_expose_the_request_id() -> None:
    c, _ = client(CorsConfig(allow_origins=(ORIGIN,)))
    r = await c.post("/v1/chat/completions", headers={"Origin": ORIGIN}, json={})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in r.headers["access-control-expose-headers"].split(", ")
