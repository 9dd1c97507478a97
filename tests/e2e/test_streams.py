"""Stream policy conversions, usage in streams, broken streams and disconnects, end to end."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import httpx
import openai
import pytest
from websockets.sync.client import connect

from tests.conftest import Stack, gateway_fixture
from tests.support import (
    CLIENT_KEY,
    HELLO,
    UPSTREAM_KEY,
    Hang,
    Reply,
    Stream,
    chunk,
    completion,
    gateway_yaml,
)

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
USAGE = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
POLICY_PROVIDERS = """\
- name: fs
  type: openai
  base_url: {url}
  api_key: ${{TEST_UPSTREAM_KEY}}
  prefix: fs
  models: [gpt-4o]
  stream_mode: force_stream
- name: fn
  type: openai
  base_url: {url}
  api_key: ${{TEST_UPSTREAM_KEY}}
  prefix: fn
  models: [gpt-4o]
  stream_mode: force_non_stream
"""


stack = gateway_fixture(lambda url: gateway_yaml(url, POLICY_PROVIDERS.format(url=url)))


def tool_call_stream(model: str) -> Stream:
    """A streamed tool call in the pieces OpenAI sends: id and name first, arguments split."""
    return Stream([
        chunk(model, {"role": "assistant", "content": None}),
        chunk(model, {"tool_calls": [{"index": 0, "id": "call_abc", "type": "function",
                                      "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
        chunk(model, {}, "tool_calls"),
        chunk(model, usage=USAGE, choices=False),
    ])


def test_force_stream_assembles_one_completion_for_a_non_streaming_client(s: Stack) -> None:
    r = s.client().chat.completions.create(model="fs/gpt-4o", messages=HELLO)
    sent = s.upstream.last().body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert r.object == "chat.completion" and r.model == "fs/gpt-4o"
    assert r.choices[0].message.content == "Hello world"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.total_tokens == 10
    assert r.id == "chatcmpl-up"


def test_force_stream_merges_tool_call_pieces_by_index(s: Stack) -> None:
    s.upstream.push(tool_call_stream("gpt-4o"))
    r = s.client().chat.completions.create(model="fs/gpt-4o", messages=HELLO, tools=TOOLS)  # type: ignore[arg-type]
    call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert (call.id, call.function.name) == ("call_abc", "get_weather")  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.usage is not None and r.usage.prompt_tokens == 11


def test_force_stream_passes_streams_through_for_a_streaming_client(s: Stack) -> None:
    chunks = list(s.client().chat.completions.create(model="fs/gpt-4o", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello world"
    assert all(c.usage is None for c in chunks)  # the usage chunk the gateway asked for is dropped


def test_force_non_stream_synthesises_a_stream_for_a_streaming_client(s: Stack) -> None:
    chunks = list(s.client().chat.completions.create(model="fn/gpt-4o", messages=HELLO, stream=True))
    sent = s.upstream.last().body
    assert sent["stream"] is False and "stream_options" not in sent
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello world"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} == {"fn/gpt-4o"}
    assert all(c.usage is None for c in chunks)


def test_force_non_stream_sends_usage_chunk_only_when_asked(s: Stack) -> None:
    chunks = list(s.client().chat.completions.create(model="fn/gpt-4o", messages=HELLO, stream=True,
                                                     stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 10
    assert "stream_options" not in s.upstream.last().body


def test_force_non_stream_tool_call_is_rebuilt_by_the_sdk_stream_helper(s: Stack) -> None:
    call = {"id": "call_xyz", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    s.upstream.push(Reply(completion("gpt-4o", None, tool_calls=[call], finish="tool_calls")))
    with s.client().chat.completions.stream(model="fn/gpt-4o", messages=HELLO, tools=TOOLS) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    tc = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert (tc.id, tc.function.name, tc.function.arguments) == ("call_xyz", "get_weather", '{"city":"Oslo"}')
    assert final.choices[0].finish_reason == "tool_calls"


def test_pass_through_tool_call_stream_is_rebuilt_by_the_sdk_stream_helper(s: Stack) -> None:
    s.upstream.push(tool_call_stream("gpt-4o"))
    with s.client().chat.completions.stream(model="up/gpt-4o", messages=HELLO, tools=TOOLS) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    tc = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert json.loads(tc.function.arguments) == {"city": "Paris"}
    assert final.model == "up/gpt-4o"


def test_streaming_upstream_call_always_asks_for_usage_but_client_sees_it_only_when_asked(s: Stack) -> None:
    chunks = list(s.client().chat.completions.create(model="up/gpt-4o", messages=HELLO, stream=True))
    assert s.upstream.last().body["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in chunks)
    chunks = list(s.client().chat.completions.create(model="up/gpt-4o", messages=HELLO, stream=True,
                                                     stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_client_stream_options_are_kept_alongside_include_usage(s: Stack) -> None:
    list(s.client().chat.completions.create(model="up/gpt-4o", messages=HELLO, stream=True,
                                            stream_options={"include_obfuscation": False}))  # type: ignore[typeddict-unknown-key]
    assert s.upstream.last().body["stream_options"] == {"include_obfuscation": False, "include_usage": True}


@pytest.mark.parametrize("behaviour", [
    Stream([chunk("gpt-4o", {"role": "assistant", "content": ""}), chunk("gpt-4o", {"content": "partial"})], cut=True),
    Stream([chunk("gpt-4o", {"role": "assistant", "content": ""}), chunk("gpt-4o", {"content": "partial"})],
           done=False),
], ids=["connection-cut", "ended-early"])
def test_cut_stream_ends_with_an_error_event_that_the_sdk_raises(s: Stack, behaviour: Stream) -> None:
    s.upstream.push(behaviour)
    seen = []
    with pytest.raises(openai.APIError) as exc:
        for c in s.client().chat.completions.create(model="up/gpt-4o", messages=HELLO, stream=True):
            seen.append(c)
    assert seen and seen[-1].choices[0].delta.content == "partial"
    assert "before it was complete" in exc.value.message or "broke the connection" in exc.value.message


def test_stream_with_finish_reason_but_no_done_gets_done_added(s: Stack) -> None:
    s.upstream.push(Stream([chunk("gpt-4o", {"content": "ok"}), chunk("gpt-4o", {}, "stop")], done=False))
    with httpx.stream("POST", s.gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "up/gpt-4o", "messages": HELLO, "stream": True}) as r:
        text = r.read().decode()
    assert text.endswith("data: [DONE]\n\n") and '"error"' not in text


def test_cr_only_upstream_stream_gets_exactly_one_done(s: Stack) -> None:
    events = [chunk("gpt-4o", {"content": "ok"}), chunk("gpt-4o", {}, "stop")]
    s.upstream.push(Stream([f"data: {json.dumps(e)}\r\r" for e in events] + ["data: [DONE]\r\r"], done=False))
    with httpx.stream("POST", s.gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "up/gpt-4o", "messages": HELLO, "stream": True}) as r:
        text = r.read().decode()
    assert text.count("[DONE]") == 1 and text.endswith("data: [DONE]\n\n") and '"error"' not in text
    assert '"content": "ok"' in text and "\r" not in text


def test_upstream_error_before_first_byte_is_a_normal_http_error_for_streams(s: Stack) -> None:
    s.upstream.push(Reply({"error": {"message": "overloaded", "type": "server_error", "code": None}}, 503))
    with pytest.raises(openai.InternalServerError) as exc:
        s.client().chat.completions.create(model="up/gpt-4o", messages=HELLO, stream=True)
    assert exc.value.status_code == 503


def test_client_disconnect_closes_the_upstream_stream_promptly(s: Stack) -> None:
    events = [chunk("gpt-4o", {"content": f"t{i} "}) for i in range(300)]
    s.upstream.push(Stream(events, delay=0.05))
    closed_before = s.upstream.closed_streams
    with httpx.stream("POST", s.gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "up/gpt-4o", "messages": HELLO, "stream": True}) as r:
        it = r.iter_lines()
        got = [line for line, _ in zip(it, range(4), strict=False)]
        assert any("t0" in g for g in got)
        assert s.upstream.open_streams == 1
    t0 = time.monotonic()
    while s.upstream.open_streams and time.monotonic() - t0 < 1.0:
        time.sleep(0.02)
    assert s.upstream.open_streams == 0, "upstream stream still open a second after the client left"
    assert s.upstream.closed_streams == closed_before + 1


def test_gateway_keeps_serving_after_a_disconnected_stream(s: Stack, tmp_path: Path) -> None:
    s.upstream.push(Stream([chunk("gpt-4o", {"content": "x"})] * 50, delay=0.02))
    with httpx.stream("POST", s.gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "up/gpt-4o", "messages": HELLO, "stream": True}) as r:
        next(r.iter_lines())
    assert s.client().chat.completions.create(model="up/gpt-4o", messages=HELLO).model == "up/gpt-4o"


def leaky_stream() -> Stream:
    return Stream([chunk("gpt-4o", {"role": "assistant", "content": ""}), chunk("gpt-4o", {"content": "par"}),
                   f'data: {{"error": {{"message": "invalid key {UPSTREAM_KEY} for org", "type": "server_error"}}}}'
                   "\n\n"], done=False)


def test_an_upstream_error_event_mid_stream_is_redacted(s: Stack) -> None:
    s.upstream.push(leaky_stream())
    with httpx.stream("POST", s.gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "up/gpt-4o", "messages": HELLO, "stream": True}) as r:
        text = r.read().decode()
    assert UPSTREAM_KEY not in text and "invalid key [redacted] for org" in text


def test_an_upstream_error_event_mid_stream_is_redacted_over_websocket(s: Stack) -> None:
    s.upstream.push(leaky_stream())
    url = s.gateway.url.replace("http://", "ws://") + "/v1/chat/completions/ws"
    frames = []
    with connect(url, additional_headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as ws:
        ws.send(json.dumps({"model": "up/gpt-4o", "messages": HELLO}))
        while not (frames and '"error"' in frames[-1]):
            frames.append(ws.recv(timeout=10))
    assert UPSTREAM_KEY not in "".join(frames) and "invalid key [redacted] for org" in frames[-1]


def wait_for_log(s: Stack, text: str, seconds: float = 5.0) -> str:
    deadline = time.monotonic() + seconds
    while text not in s.gateway.logs():
        assert time.monotonic() < deadline, f"{text!r} not logged: {s.gateway.logs()[-2000:]}"
        time.sleep(0.05)
    return s.gateway.logs()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_client_that_leaves_before_the_upstream_answers_cancels_the_call(s: Stack, stream: bool) -> None:
    s.upstream.push(Hang(30))  # would hold the gateway for 30 s (the whole generation, billed)
    with contextlib.suppress(httpx.ReadTimeout):
        httpx.post(s.gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                   json={"model": "up/gpt-4o", "messages": HELLO, "stream": stream},
                   timeout=httpx.Timeout(10, read=0.5))
    logs = wait_for_log(s, "499 chat/completions")  # noticed at once: logged long before the upstream answers
    assert "error=client_disconnected" in logs
