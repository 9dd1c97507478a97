"""The upstream boundary (vte_proxy.upstream): the one transport-error map, the one error-response
map, and Upstream itself against a scripted upstream on loopback (reached as
``http://upstream.test:PORT`` through the injected connector). Every failure is counted once in
``vte_upstream_errors_total``, where it is created."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.support import (
    UPSTREAM_KEY,
    Hang,
    Reply,
    ScriptedUpstream,
    Stream,
    chunk,
    completion,
    free_port,
    loopback_connector,
    metric,
    upstream_test_url,
)
from vte_proxy.config import ProviderConfig, Timeouts
from vte_proxy.errors import UpstreamError
from vte_proxy.redaction import Redactor, provider_secrets
from vte_proxy.upstream import Upstream, UpstreamResponse
from vte_proxy.upstream_errors import transport_error

PROVIDER = "upt"
HEADER_SECRET = "hdr-SECRET-value-42"


def errors(reason: str, provider: str = PROVIDER) -> float:
    return metric("vte_upstream_errors_total", provider=provider, reason=reason)


class Counted:
    """Asserts that exactly one upstream error of ``reason`` was counted inside the block."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __enter__(self) -> Counted:
        self.before = errors(self.reason)
        return self

    def __exit__(self, *exc: object) -> None:
        assert errors(self.reason) == self.before + 1


# ---------------------------------------------------------------- transport_error: each class, each phase
@pytest.mark.parametrize(("exc", "started", "status", "reason", "retryable"), [
    (TimeoutError(), True, 504, "idle", False),
    (aiohttp.ServerTimeoutError(), True, 504, "idle", False),
    (aiohttp.ClientPayloadError("cut"), True, 502, "truncated", False),
    (ConnectionResetError(), True, 502, "truncated", False),
    (aiohttp.ConnectionTimeoutError(), False, 502, "connect", True),
    (TimeoutError(), False, 504, "timeout", True),
    (aiohttp.SocketTimeoutError(), False, 504, "timeout", True),
    (ConnectionRefusedError(), False, 502, "connect", True),
    (aiohttp.ClientOSError(), False, 502, "connect", True),
    (aiohttp.ServerDisconnectedError(), False, 502, "connect", True),
], ids=lambda v: v.__class__.__name__ if isinstance(v, BaseException) else None)
def test_transport_error_maps_each_failure_and_phase(exc: BaseException, started: bool, status: int, reason: str,
                                                      retryable: bool) -> None:
    with Counted(reason):
        err = transport_error(PROVIDER, exc, started=started, first_byte=2.0)
    assert (err.status, err.reason, err.retryable, err.provider) == (status, reason, retryable, PROVIDER)
    assert json.loads(err.json())["error"]["code"] == reason


def test_transport_error_names_the_first_byte_timeout_and_keeps_a_given_reason() -> None:
    assert "within 2.5s" in transport_error(PROVIDER, TimeoutError(), started=False, first_byte=2.5).message
    with Counted("discovery"):
        err = transport_error(PROVIDER, ConnectionRefusedError(), started=False, reason="discovery")
    assert (err.status, err.reason) == (502, "discovery")


def test_transport_error_never_shows_the_exceptions_text() -> None:
    exc = OSError(f"cannot reach http://upstream.test/v1?key={UPSTREAM_KEY}")
    for started in (False, True):
        err = transport_error(PROVIDER, exc, started=started)
        shown = err.message + err.json().decode()
        assert "OSError" in err.message and UPSTREAM_KEY not in shown and "upstream.test" not in shown


# ---------------------------------------------------------------- Upstream against a scripted upstream
def provider(url: str, **timeouts: float) -> ProviderConfig:
    return ProviderConfig(name=PROVIDER, type="openai", base_url=url, api_key=UPSTREAM_KEY, models=("gpt-4o",),
                          headers={"X-Custom": HEADER_SECRET}, timeouts=Timeouts(**timeouts))


@pytest.fixture
def up(module_upstream: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    module_upstream.reset()
    yield module_upstream
    assert not module_upstream.script, "a scripted reply was not used"


@pytest.fixture
async def upstream(up: ScriptedUpstream) -> AsyncIterator[Upstream]:
    u = Upstream(provider(upstream_test_url(up), first_byte=1.0, idle=1.0), loopback_connector)
    yield u
    await u.aclose()


async def post(upstream: Upstream, url: str, **kw: Any) -> UpstreamResponse:
    return await upstream.send("POST", url + "/chat/completions", {"content-type": "application/json"}, b"{}", **kw)


async def fails(upstream: Upstream, url: str, **kw: Any) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        response = await post(upstream, url, **kw)
        await response.read()
    return info.value


async def test_an_answer_is_read_through_the_loopback_connector(upstream: Upstream, up: ScriptedUpstream) -> None:
    response = await post(upstream, upstream_test_url(up))
    assert response.status == 200 and (await response.read_json())["object"] == "chat.completion"
    assert up.last().headers["host"].startswith("upstream.test:")


async def test_a_refused_connection_is_a_retryable_502(up: ScriptedUpstream) -> None:
    dead = Upstream(provider(f"http://upstream.test:{free_port()}/v1"), loopback_connector)
    try:
        with Counted("connect"):
            err = await fails(dead, f"http://upstream.test:{free_port()}/v1")
    finally:
        await dead.aclose()
    assert (err.status, err.reason, err.retryable) == (502, "connect", True)


async def test_no_headers_within_first_byte_is_a_retryable_504(upstream: Upstream, up: ScriptedUpstream) -> None:
    up.push(Hang(3))
    with Counted("timeout"):
        err = await fails(upstream, upstream_test_url(up))
    assert (err.status, err.reason, err.retryable) == (504, "timeout", True)


async def test_silence_inside_a_body_is_504_idle(upstream: Upstream, up: ScriptedUpstream) -> None:
    up.push(Stream([chunk("gpt-4o", {"content": "a"}), chunk("gpt-4o", {"content": "b"})], delay=3))
    with Counted("idle"):
        err = await fails(upstream, upstream_test_url(up))
    assert (err.status, err.reason, err.retryable) == (504, "idle", False)


async def test_a_steady_stream_longer_than_the_idle_timeout_is_not_cut(upstream: Upstream,
                                                                       up: ScriptedUpstream) -> None:
    # idle is 1 s: four events 0.4 s apart take 1.6 s in all, never a second of silence (the
    # idle timer fires with data seen meanwhile and is set again for the rest)
    up.push(Stream([chunk("gpt-4o", {"content": str(i)}) for i in range(4)], delay=0.4))
    response = await post(upstream, upstream_test_url(up))
    body = await response.read()
    await response.aclose()
    assert body.count(b"data: ") == 5 and body.rstrip().endswith(b"data: [DONE]")


async def test_every_request_gives_its_connection_back_to_the_count_of_busy_ones(upstream: Upstream,
                                                                               up: ScriptedUpstream) -> None:
    up.push(Reply(completion("gpt-4o")))
    await (await post(upstream, upstream_test_url(up))).read_json()
    up.push(Reply({"error": {"message": "no"}}, 400))
    await fails(upstream, upstream_test_url(up))
    up.push(Stream([chunk("gpt-4o", {"content": "a"})]))
    response = await post(upstream, upstream_test_url(up))
    assert upstream.busy == 1
    await response.aclose()
    await response.aclose()  # twice: counted once
    assert upstream.busy == 0


async def test_a_body_cut_mid_way_is_502_truncated(upstream: Upstream, up: ScriptedUpstream) -> None:
    up.push(Stream([chunk("gpt-4o", {"content": "a"})], cut=True))
    with Counted("truncated"):
        err = await fails(upstream, upstream_test_url(up))
    assert (err.status, err.reason) == (502, "truncated")


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]"])
async def test_an_answer_that_is_not_a_json_object_is_502_protocol(upstream: Upstream, up: ScriptedUpstream,
                                                                   body: bytes) -> None:
    up.push(Reply(body))
    response = await post(upstream, upstream_test_url(up))
    with Counted("protocol"), pytest.raises(UpstreamError) as info:
        await response.read_json()
    assert (info.value.status, info.value.reason) == (502, "protocol")


# ---------------------------------------------------------------- error_from_response
async def test_an_upstream_error_body_passes_through(upstream: Upstream, up: ScriptedUpstream) -> None:
    error = {"error": {"message": "unknown parameter", "type": "invalid_request_error", "code": "bad_param"}}
    up.push(Reply(error, 400))
    with Counted("status"):
        err = await fails(upstream, upstream_test_url(up))
    assert (err.status, err.reason, err.retryable) == (400, "status", False)
    assert json.loads(err.json()) == error
    assert err.message == f"provider {PROVIDER!r} answered HTTP 400"  # the log's text, not the body


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (503, True), (404, False)])
async def test_rate_limits_and_5xx_are_retryable_and_retry_after_is_kept(upstream: Upstream, up: ScriptedUpstream,
                                                                         status: int, retryable: bool) -> None:
    up.push(Reply({"error": {"message": "busy"}}, status, headers={"Retry-After": "7"}))
    with Counted("status"):
        err = await fails(upstream, upstream_test_url(up))
    assert (err.status, err.retryable, err.headers) == (status, retryable, {"retry-after": "7"})


async def test_no_retry_after_no_header(upstream: Upstream, up: ScriptedUpstream) -> None:
    up.push(Reply({"error": {"message": "busy"}}, 429))
    err = await fails(upstream, upstream_test_url(up))
    assert err.headers == {}


async def test_a_non_json_error_body_gets_an_openai_shaped_one(upstream: Upstream, up: ScriptedUpstream) -> None:
    up.push(Reply(b"<html><body>502 Bad Gateway</body></html>", 502))
    with Counted("status"):
        err = await fails(upstream, upstream_test_url(up))
    assert json.loads(err.json()) == {"error": {"message": f"provider {PROVIDER!r} answered HTTP 502",
                                                "type": "upstream_error", "code": "status"}}


async def test_secrets_are_removed_from_an_error_body(upstream: Upstream, up: ScriptedUpstream) -> None:
    up.push(Reply({"error": {"message": f"key {UPSTREAM_KEY} with header {HEADER_SECRET} refused"}}, 401))
    err = await fails(upstream, upstream_test_url(up))
    shown = err.json().decode()
    assert UPSTREAM_KEY not in shown and HEADER_SECRET not in shown
    assert json.loads(shown)["error"]["message"] == "key [redacted] with header [redacted] refused"


async def test_a_shaper_translates_a_foreign_error_shape(upstream: Upstream, up: ScriptedUpstream) -> None:
    seen: list[tuple[int, bytes]] = []

    def shaper(status: int, body: bytes) -> tuple[int, dict[str, Any]]:
        seen.append((status, body))
        return 429, {"error": {"message": "quota used up", "type": "rate_limit_error", "code": "quota"}}

    up.push(Reply({"error": {"status": "RESOURCE_EXHAUSTED", "detail": UPSTREAM_KEY}}, 400))
    with Counted("status"):
        err = await fails(upstream, upstream_test_url(up), shaper=shaper)
    # shown as the shaper says; retryable by what the upstream answered (400: no other try helps)
    assert (err.status, err.code, err.message, err.retryable) == (429, "quota", "quota used up", False)
    assert json.loads(err.json())["error"]["type"] == "rate_limit_error"
    [(status, body)] = seen
    assert status == 400 and UPSTREAM_KEY.encode() not in body and b"[redacted]" in body  # redacted first


async def test_a_given_reason_labels_the_failure(upstream: Upstream, up: ScriptedUpstream) -> None:
    up.push(Reply({"error": {"message": "down"}}, 503))
    with Counted("discovery"):
        err = await fails(upstream, upstream_test_url(up), reason="discovery")
    assert err.reason == "discovery"


def userinfo_provider(base_url: str) -> ProviderConfig:
    return ProviderConfig(name="p", type="openai", base_url=base_url, models=("m",))


def test_base_url_userinfo_is_a_secret_in_every_form() -> None:
    p = userinfo_provider("https://svc-user:pa%40ss-SECRET-42@llm.internal/v1")
    basic = base64.b64encode(b"svc-user:pa@ss-SECRET-42").decode()
    leaked = (f"proxy said: auth {basic} failed for svc-user:pa%40ss-SECRET-42 (pa@ss-SECRET-42, "
              "pa%40ss-SECRET-42) at llm.internal").encode()
    out = Redactor(provider_secrets(p)).bytes(leaked)
    for secret in (basic, "pa@ss-SECRET-42", "pa%40ss-SECRET-42", "SECRET"):
        assert secret.encode() not in out, out
    assert b"llm.internal" in out  # the host is not a secret


def test_a_user_name_alone_counts_too() -> None:
    p = userinfo_provider("https://token-SECRET-abcdef@llm.internal/v1")
    basic = base64.b64encode(b"token-SECRET-abcdef:").decode()
    out = Redactor(provider_secrets(p)).bytes(f"{basic} token-SECRET-abcdef".encode())
    assert b"SECRET" not in out and basic.encode() not in out


def test_a_plain_base_url_adds_nothing() -> None:
    assert provider_secrets(userinfo_provider("https://api.openai.com/v1")) == []
