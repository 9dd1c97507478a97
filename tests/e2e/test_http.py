"""The HTTP surface through the official openai SDK against a real gateway and a scripted upstream."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import Stack
from tests.support import (
    CLIENT_KEY,
    HELLO,
    LIMITED_KEY,
    UPSTREAM_KEY,
    Reply,
    Stream,
    chunk,
    completion,
    gateway_yaml,
    running_gateway,
)

MESSAGES = HELLO


def test_models_lists_exposed_names_this_key_may_use(s: Stack) -> None:
    ids = {m.id for m in s.client().models.list()}
    assert ids == {"up/gpt-4o", "up/gpt-4o-mini", "demo/echo"}
    assert {m.id for m in s.client(LIMITED_KEY).models.list()} == {"demo/echo"}


def test_model_lookup_by_exposed_name_with_slash(s: Stack) -> None:
    m = s.client().models.retrieve("up/gpt-4o")
    assert (m.id, m.owned_by) == ("up/gpt-4o", "up")
    with pytest.raises(openai.NotFoundError):
        s.client().models.retrieve("up/unknown")
    with pytest.raises(openai.NotFoundError):  # exists, but not for this key
        s.client(LIMITED_KEY).models.retrieve("up/gpt-4o")


def test_chat_rewrites_only_the_model_and_sends_the_upstream_key(s: Stack) -> None:
    body = {"temperature": 0.25, "user": "u1", "tools": [{"type": "function", "function": {"name": "f",
                                                                                           "parameters": {}}}]}
    r = s.client().chat.completions.create(model="up/gpt-4o", messages=HELLO, **body)  # type: ignore[arg-type]
    assert r.model == "up/gpt-4o"
    assert r.choices[0].message.content == "Hello world"
    got = s.upstream.last("/chat/completions")
    assert got.body == {"model": "gpt-4o", "messages": HELLO, **body}
    assert got.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert got.headers["x-custom"] == "custom-value"


def test_client_credentials_cookies_and_hop_by_hop_headers_are_not_forwarded(s: Stack) -> None:
    r = httpx.post(s.gateway.url + "/v1/chat/completions",
                   json={"model": "up/gpt-4o", "messages": HELLO},
                   headers={"Authorization": f"Bearer {CLIENT_KEY}", "Cookie": "session=abc",
                            "Proxy-Authorization": "Basic eA==", "TE": "trailers", "Upgrade": "h2c",
                            "X-Forwarded-For": "1.2.3.4", "OpenAI-Beta": "assistants=v2",
                            "X-Api-Key": CLIENT_KEY})
    assert r.status_code == 200
    headers = s.upstream.last().headers
    assert CLIENT_KEY not in str(headers)
    for name in ("cookie", "proxy-authorization", "te", "upgrade", "x-forwarded-for", "x-api-key"):
        assert name not in headers
    assert headers["openai-beta"] == "assistants=v2"


def test_stream_passes_chunks_through_with_the_exposed_model(s: Stack) -> None:
    stream = s.client().chat.completions.create(model="up/gpt-4o-mini", messages=HELLO, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello world"
    assert {c.model for c in chunks} == {"up/gpt-4o-mini"}
    assert s.upstream.last().body["model"] == "gpt-4o-mini"


def test_stream_response_headers_disable_proxy_buffering(s: Stack) -> None:
    with httpx.stream("POST", s.gateway.url + "/v1/chat/completions",
                      json={"model": "up/gpt-4o", "messages": HELLO, "stream": True},
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        text = r.read().decode()
    assert text.rstrip().endswith("data: [DONE]")


def test_embeddings_completions_and_responses_are_routed(s: Stack) -> None:
    c = s.client()
    e = c.embeddings.create(model="up/gpt-4o", input="hi")
    assert e.model == "up/gpt-4o" and e.data[0].embedding == [0.1, 0.2, 0.3]
    t = c.completions.create(model="up/gpt-4o", prompt="Say")
    assert t.model == "up/gpt-4o" and t.choices[0].text == "Hello"
    r = c.responses.create(model="up/gpt-4o", input="hi")
    assert r.model == "up/gpt-4o" and r.output_text == "Hello"
    assert [q.path for q in s.upstream.requests] == ["/v1/embeddings", "/v1/completions", "/v1/responses"]
    assert all(q.body["model"] == "gpt-4o" for q in s.upstream.requests)


def test_streamed_completions_and_responses_carry_the_exposed_model(s: Stack) -> None:
    c = s.client()
    parts = list(c.completions.create(model="up/gpt-4o", prompt="Say", stream=True))
    assert "".join(p.choices[0].text for p in parts if p.choices) == "Hello"
    assert {p.model for p in parts} == {"up/gpt-4o"}
    events = list(c.responses.create(model="up/gpt-4o", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.model == "up/gpt-4o"


def test_echo_provider_answers_every_endpoint(s: Stack) -> None:
    c = s.client()
    assert c.chat.completions.create(model="demo/echo", messages=HELLO).choices[0].message.content == "Say hello"
    words = [ch.choices[0].delta.content for ch in c.chat.completions.create(
        model="demo/echo", messages=HELLO, stream=True) if ch.choices and ch.choices[0].delta.content]
    assert words == ["Say ", "hello"]
    assert len(c.embeddings.create(model="demo/echo", input=["a", "b"]).data) == 2
    assert c.completions.create(model="demo/echo", prompt="one two").choices[0].text == "one two"
    assert c.responses.create(model="demo/echo", input="ping pong").output_text == "ping pong"


@pytest.mark.parametrize("header", ["x-api-key", "x-goog-api-key"])
def test_key_is_accepted_in_alternative_headers(s: Stack, header: str) -> None:
    r = httpx.get(s.gateway.url + "/v1/models", headers={header: CLIENT_KEY})
    assert r.status_code == 200


def test_bad_or_missing_key_is_401(s: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as exc:
        s.client("sk-wrong").chat.completions.create(model="up/gpt-4o", messages=HELLO)
    assert exc.value.status_code == 401
    r = httpx.post(s.gateway.url + "/v1/chat/completions", json={"model": "up/gpt-4o"})
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"message", "type", "code"}
    assert not s.upstream.requests


def test_model_outside_the_key_allow_list_is_403(s: Stack) -> None:
    with pytest.raises(openai.PermissionDeniedError) as exc:
        s.client(LIMITED_KEY).chat.completions.create(model="up/gpt-4o", messages=HELLO)
    assert exc.value.status_code == 403
    assert exc.value.body["code"] == "model_not_allowed"  # type: ignore[index]


@pytest.mark.parametrize("model", ["x/gpt-4o", "gpt-4o", "up/", "up/gpt-4o/extra", "demo/gpt-4o"])
def test_unknown_or_wrongly_prefixed_model_is_404_and_never_reaches_a_provider(s: Stack, model: str) -> None:
    with pytest.raises(openai.NotFoundError):
        s.client().chat.completions.create(model=model, messages=HELLO)
    assert not s.upstream.requests


@pytest.mark.parametrize("body", [b"{not json", b"[1,2]", b'{"messages": []}', b'{"model": 5}', b'{"model": ""}',
                                  b'{"model": "up/gpt-4o", "stream": "yes"}', b"\xff\xfe"])
def test_malformed_body_is_400_with_an_openai_error(s: Stack, body: bytes) -> None:
    r = httpx.post(s.gateway.url + "/v1/chat/completions", content=body,
                   headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert not s.upstream.requests


def test_upstream_429_passes_through_with_retry_after(s: Stack) -> None:
    s.upstream.push(Reply({"error": {"message": "slow down", "type": "rate_limit", "code": "rate"}}, 429,
                          {"Retry-After": "7"}))
    with pytest.raises(openai.RateLimitError) as exc:
        s.client().chat.completions.create(model="up/gpt-4o", messages=HELLO)
    assert exc.value.response.headers["retry-after"] == "7"
    assert exc.value.body["message"] == "slow down"  # type: ignore[index]


def test_upstream_error_body_passes_through_without_the_upstream_key(s: Stack) -> None:
    s.upstream.push(Reply({"error": {"message": f"bad key {UPSTREAM_KEY}", "type": "invalid", "code": None}}, 400))
    r = httpx.post(s.gateway.url + "/v1/chat/completions", json={"model": "up/gpt-4o", "messages": HELLO},
                   headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert r.status_code == 400
    assert UPSTREAM_KEY not in r.text
    assert r.json()["error"]["message"] == "bad key [redacted]"


def test_non_json_upstream_error_becomes_an_openai_shaped_error(s: Stack) -> None:
    s.upstream.push(Reply(b"<html>bad gateway</html>", 502))
    with pytest.raises(openai.APIStatusError) as exc:
        s.client().chat.completions.create(model="up/gpt-4o", messages=HELLO)
    assert exc.value.status_code == 502
    assert "answered HTTP 502" in exc.value.message


def test_dated_model_names_from_the_upstream_are_rewritten_too(s: Stack) -> None:
    s.upstream.push(Reply(completion("gpt-4o-2024-08-06")))
    assert s.client().chat.completions.create(model="up/gpt-4o", messages=HELLO).model == "up/gpt-4o"


def test_health_and_readiness(s: Stack) -> None:
    assert httpx.get(s.gateway.url + "/healthz").status_code == 200
    assert httpx.get(s.gateway.url + "/readyz").json()["status"] == "ok"


def test_unknown_path_and_wrong_method_get_openai_errors(s: Stack) -> None:
    r = httpx.get(s.gateway.url + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(s.gateway.url + "/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_cors_preflight_and_simple_requests(tmp_path, upstream) -> None:  # type: ignore[no-untyped-def]
    cfg = gateway_yaml(upstream.url, cors='allow_origins: ["https://chat.example.com"]\n')
    with running_gateway(tmp_path, cfg) as gw:
        pre = httpx.options(gw.url + "/v1/chat/completions", headers={
            "Origin": "https://chat.example.com", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, anthropic-version"})
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "https://chat.example.com"
        # reflected: the anthropic SDK's headers in a browser too
        assert pre.headers["access-control-allow-headers"] == "authorization, content-type, anthropic-version"
        r = httpx.get(gw.url + "/v1/models", headers={"Origin": "https://chat.example.com",
                                                       "Authorization": f"Bearer {CLIENT_KEY}"})
        assert r.headers["access-control-allow-origin"] == "https://chat.example.com"
        other = httpx.get(gw.url + "/v1/models", headers={"Origin": "https://evil.example",
                                                           "Authorization": f"Bearer {CLIENT_KEY}"})
        assert "access-control-allow-origin" not in other.headers


def test_body_over_max_body_bytes_is_413(tmp_path, upstream) -> None:  # type: ignore[no-untyped-def]
    with running_gateway(tmp_path, gateway_yaml(upstream.url, server="max_body_bytes: 4096\n")) as gw:
        big = {"model": "up/gpt-4o", "messages": [{"role": "user", "content": "x" * 10_000}]}
        with pytest.raises(openai.APIStatusError) as exc:
            openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0).chat.completions.create(
                **big)  # type: ignore[call-overload]
        assert exc.value.status_code == 413
        # chunked, without a Content-Length: refused while reading
        def gen():  # type: ignore[no-untyped-def]
            for _ in range(10):
                yield b"x" * 1000
        r = httpx.post(gw.url + "/v1/chat/completions", content=gen(),
                       headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        assert r.status_code == 413
        assert not upstream.requests


UPSTREAM_HEADERS = {"x-request-id": "req_up_123", "x-ratelimit-remaining-requests": "99",
                    "x-ratelimit-reset-tokens": "6m0s", "set-cookie": "session=abc", "x-upstream-internal": "1",
                    "openai-organization": "org-secret"}


def test_upstream_request_id_and_rate_limit_headers_come_back(s: Stack) -> None:
    s.upstream.push(Reply(completion("gpt-4o"), headers=UPSTREAM_HEADERS))
    raw = s.client().chat.completions.with_raw_response.create(model="up/gpt-4o", messages=MESSAGES)
    assert raw.request_id == "req_up_123" and raw.parse()._request_id == "req_up_123"
    assert raw.headers["x-ratelimit-remaining-requests"] == "99" and raw.headers["x-ratelimit-reset-tokens"] == "6m0s"
    for name in ("set-cookie", "x-upstream-internal", "openai-organization"):
        assert name not in raw.headers
    s.upstream.push(Stream([chunk("gpt-4o", {"content": "hi"}, "stop")], headers=UPSTREAM_HEADERS))
    with httpx.stream("POST", s.gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "up/gpt-4o", "messages": MESSAGES, "stream": True}) as r:
        assert r.headers["x-request-id"] == "req_up_123" and r.headers["x-ratelimit-remaining-requests"] == "99"
        assert "set-cookie" not in r.headers


@pytest.mark.parametrize(("retry_after", "passed"), [
    ("120", "120"), ("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
    ("soon", None), ("1\xff", None), ("-5", None)])
def test_upstream_retry_after_is_validated(s: Stack, retry_after: str, passed: str | None) -> None:
    s.upstream.push(Reply({"error": {"message": "slow down", "type": "rate_limit_error", "code": None}}, 429,
                          {"retry-after": retry_after, "x-ratelimit-remaining-requests": "0"}))
    r = httpx.post(s.gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                   json={"model": "up/gpt-4o", "messages": MESSAGES})
    assert r.status_code == 429 and r.json()["error"]["message"] == "slow down"
    assert r.headers.get("retry-after") == passed
    assert r.headers["x-ratelimit-remaining-requests"] == "0"


def test_a_route_name_never_reaches_targets_outside_the_keys_allow_list(tmp_path, upstream) -> None:  # type: ignore[no-untyped-def]
    routes = "- name: smart\n  targets: [up/gpt-4o, demo/echo]\n- name: uponly\n  targets: [up/gpt-4o-mini]\n"
    routed = '  - name: routed\n    key: sk-routed-key-000\n    models: ["demo/*", "smart", "uponly"]\n'
    cfg = gateway_yaml(upstream.url, routes=routes).replace("keys:\n", "keys:\n" + routed, 1)
    with running_gateway(tmp_path, cfg) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-routed-key-000", max_retries=0)
        reply = client.chat.completions.create(model="smart", messages=MESSAGES)
        assert reply.choices[0].message.content == "Say hello"  # echo: up/gpt-4o was skipped
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="uponly", messages=MESSAGES)
        assert not upstream.requests
        full = openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
        assert full.chat.completions.create(model="smart", messages=MESSAGES).choices[0].message.content == (
            "Hello world")  # a key allowed everything still gets the first target


def test_the_gateways_own_limits_replace_the_upstreams_rate_limit_headers(tmp_path, upstream) -> None:  # type: ignore[no-untyped-def]
    limited = "  - name: metered\n    key: sk-metered-key-000\n    limits: {rpm: 50}\n"
    cfg = gateway_yaml(upstream.url).replace("keys:\n", "keys:\n" + limited, 1)
    with running_gateway(tmp_path, cfg) as gw:
        for key, expect_own in (("sk-metered-key-000", True), (CLIENT_KEY, False)):
            upstream.push(Reply(completion("gpt-4o"), headers=UPSTREAM_HEADERS))
            r = httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                           json={"model": "up/gpt-4o", "messages": MESSAGES})
            assert r.status_code == 200 and r.headers["x-request-id"] == "req_up_123"
            if expect_own:
                assert r.headers["x-ratelimit-limit-requests"] == "50"
                assert "x-ratelimit-reset-tokens" not in r.headers  # the upstream's, not mixed in
            else:
                assert r.headers["x-ratelimit-remaining-requests"] == "99"
