"""Garbage in, an OpenAI-shaped 4xx out: never a traceback, never a 500, and the gateway keeps serving."""

from __future__ import annotations

import json
import random

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Stack
from tests.support import CLIENT_KEY
from vte_proxy.dialect import parse_openai as parse_request
from vte_proxy.errors import GatewayError

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=200))
def test_parse_request_accepts_or_refuses_any_bytes_with_a_400(raw: bytes) -> None:
    try:
        body = parse_request(raw)
    except GatewayError as err:
        assert err.status == 400 and set(err.body()["error"]) == {"message", "type", "code"}  # type: ignore[arg-type]
    else:
        assert isinstance(body, dict) and isinstance(body["model"], str) and body["model"]


@settings(max_examples=400, deadline=None)
@given(value=json_values, model=st.one_of(st.text(max_size=300), json_values))
def test_parse_request_checks_model_and_stream_types_of_any_json(value: object, model: object) -> None:
    for candidate in (value, {"model": model}, {"model": "a/b", "stream": value}):
        try:
            body = parse_request(json.dumps(candidate).encode())
        except GatewayError as err:
            assert err.status == 400
        else:
            assert isinstance(body["model"], str) and 0 < len(body["model"]) <= 256
            assert body.get("stream") is None or isinstance(body["stream"], bool)


def garbage_bodies(rng: random.Random) -> list[bytes]:
    bodies = [b"", b"null", b"[]", b'"x"', b"123", b"{", b"}", b"\xff\xfe\xfd", b'{"model": "demo/echo"',
              b"[" * 5000 + b"]" * 5000, b'{"a":' * 2000 + b"1" + b"}" * 2000,
              json.dumps({"model": "demo/echo", "messages": "x" * 500_000}).encode(),
              b'{"model": "demo/echo\xff"}', b'{"model": "\\ud800"}']
    for model in (None, 0, 1.5, True, [], {}, "", "x" * 1000, "../../etc/passwd", "<b>x</b>", "demo/echo\n"):
        bodies.append(json.dumps({"model": model, "messages": []}).encode())
    for field, value in (("stream", "yes"), ("stream", 1), ("messages", 5), ("messages", "hi"),
                         ("messages", [1, 2]), ("messages", [None]), ("messages", {"role": "user"})):
        bodies.append(json.dumps({"model": "demo/echo", field: value}).encode())
    while len(bodies) < 300:
        bodies.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))))
    return bodies


@pytest.mark.parametrize("endpoint", ["chat/completions", "completions", "embeddings", "responses"])
def test_hundreds_of_garbage_bodies_get_openai_shaped_4xx(s: Stack, endpoint: str) -> None:
    rng = random.Random(endpoint)
    statuses = set()
    with httpx.Client(base_url=s.gateway.url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=30) as c:
        for body in garbage_bodies(rng):
            if endpoint != "chat/completions" and b'"messages"' in body and b"demo/echo" in body:
                continue  # a messages field is fine for other endpoints
            r = c.post(f"/v1/{endpoint}", content=body, headers={"content-type": "application/json"})
            statuses.add(r.status_code)
            assert 400 <= r.status_code < 500, (r.status_code, body[:80], r.text[:200])
            err = r.json()["error"]
            assert set(err) == {"message", "type", "code"} and "Traceback" not in r.text
    assert statuses <= {400, 404}
    assert not s.upstream.requests  # nothing invalid was forwarded


@pytest.mark.parametrize("method,path", [("DELETE", "/v1/chat/completions"), ("PUT", "/v1/models"),
                                         ("GET", "/v1/embeddings"), ("PATCH", "/"), ("GET", "/v1/../etc/passwd"),
                                         ("GET", "/%00"), ("GET", "/v1/" + "a" * 5000), ("POST", "/v2/chat"),
                                         ("GET", "//v1//models"), ("TRACE", "/healthz")])
def test_wrong_methods_and_odd_paths_get_openai_shaped_4xx(s: Stack, method: str, path: str) -> None:
    r = httpx.request(method, s.gateway.url + path, headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert 400 <= r.status_code < 500
    assert set(r.json()["error"]) == {"message", "type", "code"}


def test_random_json_objects_for_a_real_model_never_cause_a_5xx(s: Stack) -> None:
    rng = random.Random(7)
    with httpx.Client(base_url=s.gateway.url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as c:
        for i in range(150):
            body: dict[str, object] = {"model": "demo/echo"}
            for _ in range(rng.randint(0, 4)):
                body[rng.choice(["messages", "stream", "input", "prompt", "tools", "n", "x"])] = rng.choice(
                    [None, 1, "s", [], [{}], [{"role": "user", "content": 5}], {"a": 1}, True, -1.5])
            r = c.post(rng.choice(["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]),
                       json=body)
            assert r.status_code < 500, (i, body, r.text)
    assert httpx.get(s.gateway.url + "/healthz").status_code == 200


@pytest.mark.parametrize("depth", [200, 255, 600, 1020])
def test_json_nested_deeper_than_the_gateway_can_reencode_is_a_400(s: Stack, depth: int) -> None:
    # orjson parses up to 1024 levels but writes only ~254: such a body once became a 500 when
    # the gateway re-serialized it for the upstream.
    nested = "[" * depth + "]" * depth
    for model in ("up/gpt-4o", "demo/echo"):
        body = f'{{"model": "{model}", "messages": [{{"role": "user", "content": "hi"}}], "x": {nested}}}'
        r = httpx.post(s.gateway.url + "/v1/chat/completions", content=body,
                       headers={"Authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"})
        assert r.status_code == 400, (model, depth, r.text[:200])
        assert r.json()["error"]["code"] == "too_deep"
    assert not s.upstream.requests
