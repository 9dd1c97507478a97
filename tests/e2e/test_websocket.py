"""WS /v1/chat/completions/ws: the seed's protocol, end to end."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.conftest import Stack
from tests.support import CLIENT_KEY, LIMITED_KEY, Reply, Stream, chunk, gateway_yaml, running_gateway


def ws_url(s: Stack, query: str = "") -> str:
    return s.gateway.url.replace("http://", "ws://") + "/v1/chat/completions/ws" + query


def ask(ws, body: dict) -> list[str]:  # type: ignore[no-untyped-def]
    ws.send(json.dumps(body))
    frames = []
    while True:
        frame = ws.recv(timeout=10)
        frames.append(frame)
        if frame == "data: [DONE]" or frame.startswith(('{"error"', 'data: {"error"')):
            return frames


def content(frames: list[str]) -> str:
    out = ""
    for f in frames:
        if f.startswith("data: {"):
            obj = json.loads(f[6:])
            for c in obj.get("choices") or ():
                out += c["delta"].get("content") or ""
    return out


def test_two_requests_on_one_connection_each_end_with_done(s: Stack) -> None:
    with connect(ws_url(s), additional_headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as ws:
        first = ask(ws, {"model": "up/gpt-4o", "messages": [{"role": "user", "content": "a"}]})
        second = ask(ws, {"model": "demo/echo", "messages": [{"role": "user", "content": "two words"}]})
    assert first[-1] == "data: [DONE]" and content(first) == "Hello world"
    assert all(json.loads(f[6:])["model"] == "up/gpt-4o" for f in first[:-1])
    assert second[-1] == "data: [DONE]" and content(second) == "two words"
    assert s.upstream.last().body["stream"] is True


def test_key_in_query_parameter_is_accepted(s: Stack) -> None:
    with connect(ws_url(s, f"?api_key={CLIENT_KEY}")) as ws:
        frames = ask(ws, {"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]})
    assert content(frames) == "hi"


@pytest.mark.parametrize("query,headers", [("", {}), ("?api_key=sk-wrong", {}), ("", {"Authorization": "Bearer no"})])
def test_connection_without_a_valid_key_is_refused(s: Stack, query: str, headers: dict[str, str]) -> None:
    with pytest.raises(InvalidStatus) as exc, connect(ws_url(s, query), additional_headers=headers):
        pass
    assert exc.value.response.status_code == 403


def test_errors_come_back_as_one_error_frame_and_the_connection_stays_usable(s: Stack) -> None:
    s.upstream.push(Reply({"error": {"message": "busy", "type": "x", "code": None}}, 429))
    with connect(ws_url(s), additional_headers={"x-api-key": CLIENT_KEY}) as ws:
        assert json.loads(ask(ws, {"model": "nope/x", "messages": []})[0])["error"]["code"] == "model_not_found"
        assert json.loads(ask(ws, {"messages": []})[0])["error"]["code"] == "invalid_model"
        ws.send("not json")
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == "invalid_json"
        assert json.loads(ask(ws, {"model": "up/gpt-4o", "messages": []})[0])["error"]["message"] == "busy"
        assert content(ask(ws, {"model": "demo/echo", "messages": [{"role": "user", "content": "ok"}]})) == "ok"


def test_model_outside_the_allow_list_is_refused_per_request(s: Stack) -> None:
    with connect(ws_url(s), additional_headers={"x-api-key": LIMITED_KEY}) as ws:
        assert json.loads(ask(ws, {"model": "up/gpt-4o", "messages": []})[0])["error"]["code"] == "model_not_allowed"


def test_cut_upstream_stream_ends_with_an_error_frame(s: Stack) -> None:
    s.upstream.push(Stream([chunk("gpt-4o", {"content": "par"})], done=False))
    with connect(ws_url(s), additional_headers={"x-api-key": CLIENT_KEY}) as ws:
        frames = ask(ws, {"model": "up/gpt-4o", "messages": []})
    assert content(frames[:-1]) == "par"
    assert json.loads(frames[-1][6:])["error"]["code"] == "truncated"


def test_a_binary_frame_closes_with_policy_violation(s: Stack) -> None:
    with connect(ws_url(s), additional_headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as ws:
        assert content(ask(ws, {"model": "demo/echo", "messages": [{"role": "user", "content": "ok"}]})) == "ok"
        ws.send(b'{"model": "demo/echo"}')
        with pytest.raises(ConnectionClosed) as exc:
            ws.recv(timeout=10)
    assert exc.value.rcvd is not None and exc.value.rcvd.code == 1008
    assert exc.value.rcvd.reason == "text frames only"


def test_websocket_answers_count_in_max_concurrency(tmp_path, upstream) -> None:  # type: ignore[no-untyped-def]
    with running_gateway(tmp_path, gateway_yaml(upstream.url, server="max_concurrency: 1\n")) as gw:
        url = gw.url.replace("http://", "ws://") + "/v1/chat/completions/ws"
        auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
        echo = {"model": "demo/echo", "messages": [{"role": "user", "content": "hi"}]}
        # a WebSocket answer in progress takes the one place: an HTTP request is refused
        upstream.push(Stream([chunk("gpt-4o", {"content": "x"})] * 10 + [chunk("gpt-4o", {}, "stop")], delay=0.3))
        with connect(url, additional_headers=auth) as ws:
            ws.send(json.dumps({"model": "up/gpt-4o", "messages": [{"role": "user", "content": "a"}]}))
            ws.recv(timeout=10)  # the answer has begun
            r = httpx.post(gw.url + "/v1/chat/completions", headers=auth, json=echo)
            assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
            while ws.recv(timeout=10) != "data: [DONE]":
                pass
        # an HTTP stream in progress takes it: a WebSocket answer is refused with an error frame
        upstream.push(Stream([chunk("gpt-4o", {"content": "x"})] * 10 + [chunk("gpt-4o", {}, "stop")], delay=0.3))
        done = threading.Event()

        def consume() -> None:
            with httpx.stream("POST", gw.url + "/v1/chat/completions", headers=auth, timeout=30,
                              json={"model": "up/gpt-4o", "messages": [{"role": "user", "content": "a"}],
                                    "stream": True}) as resp:
                for _ in resp.iter_lines():
                    pass
            done.set()

        t = threading.Thread(target=consume)
        t.start()
        deadline = time.monotonic() + 5
        while upstream.open_streams == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with connect(url, additional_headers=auth) as ws:
            frames = ask(ws, echo)
        t.join(30)
    assert json.loads(frames[-1])["error"]["code"] == "overloaded" and done.is_set()
