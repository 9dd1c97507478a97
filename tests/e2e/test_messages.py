"""``/v1/messages`` and ``/v1/messages/count_tokens`` end to end: the official ``anthropic`` SDK ->
a real gateway process -> a scripted Anthropic upstream (tests/anthropic_upstream.py, which
answers 400 to any body the SDK's own request types reject, and 401 without the right
``x-api-key``), a scripted OpenAI upstream and the echo provider; and the ``openai`` SDK on the
``anthropic`` provider."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.anthropic_upstream import AnthropicUpstream, message_events, text_message, tool_use_message
from tests.anthropic_wire import parse_sse
from tests.support import (
    CLIENT_KEY,
    GatewayProcess,
    Reply,
    ScriptedUpstream,
    Stream,
    chunk,
    completion,
    gateway_yaml,
    running_gateway,
    serve_app_in_thread,
)
from tests.vertex_upstream import VertexUpstream, function_call_response, text_event, text_response

ANTHROPIC_KEY = "sk-ant-upstream-SECRET-0001"
SIG = "+vv8/f7/c2lnLWJ5dGVzIQ=="
CLAUDE = "claude/claude-test"
GPT = "up/gpt-4o"
TOOLS: Any = [{"name": "get_weather", "description": "Weather of a city", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
PROVIDERS = """\
- name: claude
  type: anthropic
  base_url: {url}
  api_key: ${{TEST_ANTHROPIC_KEY}}
  prefix: claude
  models: [claude-test]
- name: claude-d
  type: anthropic
  base_url: {url}
  api_key: ${{TEST_ANTHROPIC_KEY}}
  prefix: claude-d
  discover: {{enabled: true, interval: 1h}}
- name: claude-retry
  type: anthropic
  base_url: {url}
  api_key: ${{TEST_ANTHROPIC_KEY}}
  prefix: claude-retry
  models: [claude-test]
  retries: 1
- name: claude-fs
  type: anthropic
  base_url: {url}
  api_key: ${{TEST_ANTHROPIC_KEY}}
  prefix: claude-fs
  models: [claude-test]
  stream_mode: force_stream
- name: claude-fns
  type: anthropic
  base_url: {url}
  api_key: ${{TEST_ANTHROPIC_KEY}}
  prefix: claude-fns
  models: [claude-test]
  stream_mode: force_non_stream
- name: up-fs
  type: openai
  base_url: {openai_url}
  api_key: sk-up-fs-key-0000
  prefix: up-fs
  models: [gpt-4o]
  stream_mode: force_stream
- name: gemini
  type: vertex-express
  base_url: {vertex_url}
  api_key: vertex-key-SECRET-0003
  prefix: gemini
  models: [gemini-2.5-flash]
- name: dead
  type: openai
  base_url: http://127.0.0.1:9/v1
  prefix: dead
  models: [gpt-4o]
  timeouts: {{connect: 2s}}
"""
ROUTES = """\
- name: smart
  targets: [claude/claude-test, up/gpt-4o]
"""


@dataclass
class Stack:
    claude: AnthropicUpstream
    openai_up: ScriptedUpstream
    gateway: GatewayProcess
    vertex: VertexUpstream

    def client(self, **kw: Any) -> anthropic.Anthropic:
        kw.setdefault("api_key", CLIENT_KEY)
        return anthropic.Anthropic(base_url=self.gateway.url, max_retries=0, **kw)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0)


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    claude = AnthropicUpstream(api_key=ANTHROPIC_KEY)
    vertex = VertexUpstream(api_key="vertex-key-SECRET-0003")
    up = ScriptedUpstream().start()
    with serve_app_in_thread(claude.app) as server, serve_app_in_thread(vertex.app) as vertex_server:
        text = gateway_yaml(up.url, PROVIDERS.format(url=server.url, openai_url=up.url, vertex_url=vertex_server.url),
                            routes=ROUTES)
        with running_gateway(tmp_path_factory.mktemp("messages"), text,
                             env={"TEST_ANTHROPIC_KEY": ANTHROPIC_KEY}) as gw:
            yield Stack(claude, up, gw, vertex)
    up.stop()


@pytest.fixture
def stack(module_stack: Stack) -> Stack:
    module_stack.claude.reset()
    module_stack.vertex.reset()
    module_stack.openai_up.script.clear()
    module_stack.openai_up.requests.clear()
    return module_stack


# --- native: an anthropic provider --------------------------------------------------------------

def test_native_create_passes_everything_through(stack: Stack) -> None:
    stack.claude.push_json(text_message("Hello from Claude", usage={"cache_read_input_tokens": 30}))
    msg = stack.client().messages.create(
        model=CLAUDE, max_tokens=100, system=[{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi",
                                                "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],
        thinking={"type": "enabled", "budget_tokens": 2048}, metadata={"user_id": "u1"},
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31", "x-claude-code-session-id": "s1"},
        extra_query={"beta": "true"})
    assert msg.content[0].text == "Hello from Claude" and msg.model == CLAUDE  # type: ignore[union-attr]
    assert msg.usage.cache_read_input_tokens == 30
    sent = stack.claude.requests[0]
    assert sent.body["model"] == "claude-test"
    assert sent.body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert sent.body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY and "authorization" not in sent.headers
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert sent.headers["anthropic-version"] not in ("", "2023-06-01")  # the SDK's own, forwarded
    assert "x-claude-code-session-id" not in sent.headers


def test_native_stream_and_bearer_key(stack: Stack) -> None:
    stack.claude.push_stream(message_events(text_message("Streaming works")))
    with stack.client(api_key=None, auth_token=CLIENT_KEY).messages.stream(
            model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Streaming works" and final.model == CLAUDE and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4


def test_native_tool_round_trip_with_thinking(stack: Stack) -> None:
    client = stack.client()
    stack.claude.push_stream(message_events(tool_use_message("get_weather", {"city": "Paris"},
                                                             thinking=("I need the weather", SIG))))
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    with client.messages.stream(model=CLAUDE, max_tokens=4000, tools=TOOLS, messages=messages,
                                thinking={"type": "enabled", "budget_tokens": 1024}) as s:
        first = s.get_final_message()
    assert first.stop_reason == "tool_use" and first.content[0].signature == SIG  # type: ignore[union-attr]
    tool_use = first.content[1]
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id,  # type: ignore[union-attr]
                                               "content": "18C, sunny"}]}]
    stack.claude.push_json(text_message("It is 18C and sunny."))
    answer = client.messages.create(model=CLAUDE, max_tokens=4000, tools=TOOLS, messages=messages,
                                    thinking={"type": "enabled", "budget_tokens": 1024})
    assert answer.content[0].text == "It is 18C and sunny."  # type: ignore[union-attr]
    replayed = stack.claude.requests[1].body["messages"][1]["content"]
    assert replayed[0] == {"type": "thinking", "thinking": "I need the weather", "signature": SIG}


def test_native_count_tokens(stack: Stack) -> None:
    count = stack.client().messages.count_tokens(model=CLAUDE, messages=[{"role": "user", "content": "hi"}],
                                                 tools=TOOLS, system="sys")
    assert count.input_tokens == 42
    sent = stack.claude.requests[0]
    assert sent.path == "/v1/messages/count_tokens" and sent.body["model"] == "claude-test"


@pytest.mark.parametrize(("status", "exc"), [(529, anthropic.OverloadedError), (429, anthropic.RateLimitError),
                                             (400, anthropic.BadRequestError)])
def test_native_upstream_errors_are_typed(stack: Stack, status: int, exc: type[Exception]) -> None:
    stack.claude.push_error(status, f"upstream says no {ANTHROPIC_KEY}")
    with pytest.raises(exc) as info:
        stack.client().messages.create(model=CLAUDE, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    err: Any = info.value
    assert err.status_code == status and err.body["type"] == "error"
    assert ANTHROPIC_KEY not in json.dumps(err.body) and "upstream says no" in err.body["error"]["message"]


def test_overloaded_is_retried(stack: Stack) -> None:
    stack.claude.push_error(529, "Overloaded")
    stack.claude.push_json(text_message("second try"))
    msg = stack.client().messages.create(model="claude-retry/claude-test", max_tokens=5,
                                         messages=[{"role": "user", "content": "x"}])
    assert msg.content[0].text == "second try" and len(stack.claude.requests) == 2  # type: ignore[union-attr]


def test_native_stream_cut_ends_with_an_error_event(stack: Stack) -> None:
    stack.claude.push_stream(message_events(text_message("Hello there"))[:5], abort=True)
    with httpx.stream("POST", stack.gateway.url + "/v1/messages", headers={"x-api-key": CLIENT_KEY},
                      json={"model": CLAUDE, "max_tokens": 5, "stream": True,
                            "messages": [{"role": "user", "content": "x"}]}) as r:
        events = parse_sse(r.read())
    assert events[0][0] == "message_start" and events[0][1]["message"]["model"] == CLAUDE
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "api_error"
    assert "message_stop" not in [n for n, _ in events]


def test_route_falls_over_from_anthropic_to_openai(stack: Stack) -> None:
    stack.claude.push_error(529, "Overloaded")
    msg = stack.client().messages.create(model="smart", max_tokens=20, messages=[{"role": "user", "content": "x"}])
    assert msg.content[0].text == "Hello world" and msg.model == "smart"  # type: ignore[union-attr]
    assert len(stack.claude.requests) == 1 and stack.openai_up.last("/chat/completions").body["model"] == "gpt-4o"


# --- translated: openai and echo providers ------------------------------------------------------

def test_translated_create_on_openai(stack: Stack) -> None:
    msg = stack.client().messages.create(
        model=GPT, max_tokens=30,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi",
                                                "cache_control": {"type": "ephemeral", "ttl": "5m"}}]}],
        stop_sequences=["END"], thinking={"type": "adaptive"},
        extra_headers={"anthropic-beta": "context-management-2025-06-27"})
    assert msg.content[0].text == "Hello world" and msg.model == GPT and msg.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert msg.usage.input_tokens == 7 and msg.usage.output_tokens == 3
    sent = stack.openai_up.last("/chat/completions")
    assert sent.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert sent.body["stop"] == ["END"] and sent.body["max_tokens"] == 30 and "thinking" not in sent.body
    assert "cache_control" not in json.dumps(sent.body) and "anthropic-beta" not in sent.headers


def test_translated_stream_on_openai(stack: Stack) -> None:
    with stack.client().messages.stream(model=GPT, max_tokens=30,
                                        messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Hello world" and final.model == GPT and final.usage.output_tokens == 3


def test_translated_tool_round_trip_on_openai(stack: Stack) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    stack.openai_up.push(Stream([chunk("gpt-4o", {"role": "assistant", "content": ""}),
                                 chunk("gpt-4o", {"tool_calls": [{"index": 0, **call}]}),
                                 chunk("gpt-4o", {}, "tool_calls"),
                                 chunk("gpt-4o", usage={"prompt_tokens": 9, "completion_tokens": 4,
                                                        "total_tokens": 13}, choices=False)]))
    client = stack.client()
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    with client.messages.stream(model=GPT, max_tokens=100, tools=TOOLS, messages=messages,
                                tool_choice={"type": "any", "disable_parallel_tool_use": True}) as s:
        first = s.get_final_message()
    tool_use: Any = first.content[0]
    assert first.stop_reason == "tool_use" and tool_use.input == {"city": "Paris"} and tool_use.id == "call_1"
    sent = stack.openai_up.last("/chat/completions").body
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
    assert sent["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "18C"}]}]
    stack.openai_up.push(Reply(completion("gpt-4o", "18C in Paris.")))
    answer = client.messages.create(model=GPT, max_tokens=100, tools=TOOLS, messages=messages)
    assert answer.content[0].text == "18C in Paris."  # type: ignore[union-attr]
    sent = stack.openai_up.last("/chat/completions").body
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "18C"}


def test_translated_count_tokens_is_estimated_offline(stack: Stack) -> None:
    count = stack.client().messages.count_tokens(model=GPT, messages=[{"role": "user", "content": "hello world"}])
    assert 0 < count.input_tokens < 20 and not stack.openai_up.requests


def test_translated_upstream_error_is_anthropic_shaped(stack: Stack) -> None:
    stack.openai_up.push(Reply({"error": {"message": "quota gone", "type": "insufficient_quota", "code": None}},
                               status=429))
    with pytest.raises(anthropic.RateLimitError) as info:
        stack.client().messages.create(model=GPT, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert info.value.body == {"type": "error", "error": {"type": "rate_limit_error", "message": "quota gone"}}


def test_translated_stream_cut_ends_with_an_error_event(stack: Stack) -> None:
    stack.openai_up.push(Stream([chunk("gpt-4o", {"role": "assistant", "content": ""}),
                                 chunk("gpt-4o", {"content": "Hel"})], cut=True, done=False))
    with pytest.raises(anthropic.APIStatusError) as info, stack.client().messages.stream(
            model=GPT, max_tokens=5, messages=[{"role": "user", "content": "x"}]) as s:
        "".join(s.text_stream)
    assert "ended the stream" in str(info.value) or "connection" in str(info.value)


def test_vertex_express_through_chat(stack: Stack) -> None:
    stack.vertex.push_json(text_response("Hello from Gemini"))
    client = stack.client()
    msg = client.messages.create(model="gemini/gemini-2.5-flash", max_tokens=50, system="Be brief.",
                                 messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == "Hello from Gemini" and msg.model == "gemini/gemini-2.5-flash"  # type: ignore[union-attr]
    assert msg.usage.input_tokens == 5 and msg.usage.output_tokens == 3
    sent = stack.vertex.requests[0].body
    assert sent["systemInstruction"]["parts"][0]["text"] == "Be brief."
    stack.vertex.push_stream([text_event("Hel"), text_event("lo", finish="STOP", usage={
        "promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7})])
    with client.messages.stream(model="gemini/gemini-2.5-flash", max_tokens=50,
                                messages=[{"role": "user", "content": "hi"}]) as s:
        assert "".join(s.text_stream) == "Hello"
    stack.vertex.push_json(function_call_response("get_weather", {"city": "Paris"}))
    tool = client.messages.create(model="gemini/gemini-2.5-flash", max_tokens=50, tools=TOOLS,
                                  messages=[{"role": "user", "content": "weather?"}])
    assert tool.stop_reason == "tool_use" and tool.content[0].input == {"city": "Paris"}  # type: ignore[union-attr]


def test_echo_provider(stack: Stack) -> None:
    client = stack.client()
    msg = client.messages.create(model="demo/echo", max_tokens=50, messages=[{"role": "user", "content": "ping"}])
    assert msg.content and msg.model == "demo/echo" and msg.stop_reason in ("end_turn", "max_tokens")
    with client.messages.stream(model="demo/echo", max_tokens=50, messages=[{"role": "user", "content": "ping"}]) as s:
        final = s.get_final_message()
    assert final.content and final.model == "demo/echo"


# --- the gateway's own errors in Anthropic's shape ----------------------------------------------

def test_gateway_errors_are_typed(stack: Stack) -> None:
    user: Any = [{"role": "user", "content": "x"}]
    with pytest.raises(anthropic.AuthenticationError) as auth:
        stack.client(api_key="sk-wrong").messages.create(model=CLAUDE, max_tokens=5, messages=user)
    assert auth.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                          "message": "missing or invalid API key"}}
    with pytest.raises(anthropic.NotFoundError):
        stack.client().messages.create(model="nope/none", max_tokens=5, messages=user)
    with pytest.raises(anthropic.PermissionDeniedError):
        stack.client(api_key="sk-limited-key-000").messages.create(model=CLAUDE, max_tokens=5, messages=user)
    no_max = httpx.post(stack.gateway.url + "/v1/messages", headers={"x-api-key": CLIENT_KEY},
                        json={"model": GPT, "messages": user})
    assert no_max.status_code == 400 and no_max.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(stack.gateway.url + "/v1/messages", headers={"x-api-key": CLIENT_KEY}, content=b"{not json")
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert not stack.claude.requests and not stack.openai_up.requests


def test_body_too_large_is_413_in_anthropic_shape(stack: Stack) -> None:
    r = httpx.post(stack.gateway.url + "/v1/messages", headers={"x-api-key": CLIENT_KEY},
                   content=b"x" * (33 * 1024 * 1024))
    assert r.status_code == 413
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "request_too_large"


# --- stream policy, unreachable upstreams, the request log ----------------------------------------

def test_force_stream_native_assembles_a_message(stack: Stack) -> None:
    answer = tool_use_message("get_weather", {"city": "Paris"}, thinking=("plan", SIG))
    stack.claude.push_stream(message_events(answer))
    msg = stack.client().messages.create(model="claude-fs/claude-test", max_tokens=50, tools=TOOLS,
                                         messages=[{"role": "user", "content": "x"}])
    assert stack.claude.requests[0].body["stream"] is True
    assert msg.model == "claude-fs/claude-test" and msg.stop_reason == "tool_use"
    assert msg.model_dump(exclude_none=True)["content"] == answer["content"]


def test_force_non_stream_native_synthesizes_events(stack: Stack) -> None:
    stack.claude.push_json(tool_use_message("get_weather", {"city": "Paris"}, thinking=("plan", SIG)))
    with stack.client().messages.stream(model="claude-fns/claude-test", max_tokens=50, tools=TOOLS,
                                        messages=[{"role": "user", "content": "x"}]) as s:
        final = s.get_final_message()
    assert "stream" not in stack.claude.requests[0].body
    assert final.model == "claude-fns/claude-test" and final.content[0].signature == SIG  # type: ignore[union-attr]
    assert final.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]


def test_force_stream_translated(stack: Stack) -> None:
    msg = stack.client().messages.create(model="up-fs/gpt-4o", max_tokens=50,
                                         messages=[{"role": "user", "content": "x"}])
    assert msg.content[0].text == "Hello world" and msg.model == "up-fs/gpt-4o"  # type: ignore[union-attr]
    assert stack.openai_up.last("/chat/completions").body["stream"] is True


def test_unreachable_upstream_is_an_api_error(stack: Stack) -> None:
    with pytest.raises(anthropic.InternalServerError) as info:
        stack.client().messages.create(model="dead/gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502 and info.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_request_log_shows_messages(stack: Stack) -> None:
    stack.client().messages.create(model="demo/echo", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    status = httpx.get(stack.gateway.url + "/status.json", auth=("any", "sk-admin-key-000")).json()
    assert any(e["endpoint"] == "messages" and e["model"] == "demo/echo" for e in status["log"])


# --- models, HEAD /, metrics --------------------------------------------------------------------

def test_models_list_for_anthropic_clients_and_head(stack: Stack) -> None:
    ids = [m.id for m in stack.client().models.list()]
    assert CLAUDE in ids and GPT in ids and "smart" in ids
    one = stack.client().models.retrieve(CLAUDE)
    assert one.id == CLAUDE and one.type == "model" and one.display_name == CLAUDE
    assert httpx.head(stack.gateway.url + "/").status_code == 200
    assert [m.id for m in stack.openai().models.list()] == [m for m in ids]


def test_discovery_on_an_anthropic_provider(stack: Stack) -> None:
    ids = {m.id for m in stack.openai().models.list()}
    assert {"claude-d/claude-test", "claude-d/claude-other"} <= ids


def test_metrics_count_messages(stack: Stack) -> None:
    def missing(text: str) -> str:
        return next((ln for ln in text.splitlines() if ln.startswith('vte_usage_missing_total{provider="demo"}')), "")

    before = missing(httpx.get(stack.gateway.url + "/metrics").text)
    stack.client().messages.create(model="demo/echo", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    stack.client().messages.count_tokens(model="demo/echo", messages=[{"role": "user", "content": "x"}])
    text = httpx.get(stack.gateway.url + "/metrics").text
    assert 'endpoint="messages",key="team",model="demo/echo",provider="demo"' in text
    assert 'endpoint="messages/count_tokens",key="team",model="demo/echo",provider="demo"' in text
    assert missing(text) == before  # counting tokens is not an answer without usage


# --- the openai SDK on an anthropic provider ---------------------------------------------------

def test_openai_sdk_chat_on_anthropic(stack: Stack) -> None:
    stack.claude.push_json(text_message("Hi from Claude", usage={"input_tokens": 5, "cache_read_input_tokens": 100,
                                                                 "cache_creation_input_tokens": 10}))
    out = stack.openai().chat.completions.create(model=CLAUDE, messages=[
        {"role": "developer", "content": "Be kind."}, {"role": "user", "content": "hi"}], max_tokens=64)
    assert out.choices[0].message.content == "Hi from Claude" and out.model == CLAUDE
    assert out.usage is not None and out.usage.prompt_tokens == 115
    assert out.usage.prompt_tokens_details is not None and out.usage.prompt_tokens_details.cached_tokens == 100
    sent = stack.claude.requests[0].body
    assert sent["system"] == [{"type": "text", "text": "Be kind."}] and sent["max_tokens"] == 64


def test_openai_sdk_stream_with_usage_on_anthropic(stack: Stack) -> None:
    stack.claude.push_stream(message_events(text_message("Streamed", usage={"cache_read_input_tokens": 50})))
    stream = stack.openai().chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "hi"}],
                                                    stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Streamed"
    assert all(c.model == CLAUDE for c in chunks)
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == 62 and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 50


def test_openai_sdk_tools_on_anthropic(stack: Stack) -> None:
    client = stack.openai()
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": TOOLS[0]["input_schema"]}}]
    stack.claude.push_json(tool_use_message("get_weather", {"city": "Paris"}, thinking=("plan", SIG)))
    first = client.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "Weather?"}],
                                           tools=tools, reasoning_effort="low")
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and message.tool_calls
    call: Any = message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    stack.claude.push_json(text_message("18C"))
    replay = message.model_dump(exclude_none=True)  # keeps reasoning_content, as OpenAI clients commonly do
    second = client.chat.completions.create(model=CLAUDE, tools=tools, reasoning_effort="low", messages=[
        {"role": "user", "content": "Weather?"}, replay, {"role": "tool", "tool_call_id": call.id, "content": "18C"}])
    assert second.choices[0].message.content == "18C"
    sent = stack.claude.requests[1].body
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["messages"][1]["content"][0] == {"type": "thinking", "thinking": "plan", "signature": SIG}
    assert sent["messages"][1]["content"][1]["id"] == "toolu_01abc"
    assert sent["messages"][2]["content"][0]["tool_use_id"] == "toolu_01abc"


def test_anthropic_config_check(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("version: 1\nkeys: [{name: a, key: k}]\nproviders:\n  - {name: c, type: anthropic, models: [m]}\n")
    from vte_proxy.loader import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"api_key \(or api_keys\) is required for type anthropic"):
        load_config(str(path))
