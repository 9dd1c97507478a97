"""WS /v1/chat/completions/ws: the seed's protocol, end to end."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import Stack
from tests.support import CLIENT_KEY, LIMITED_KEY, Reply, Stream, chunk


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
