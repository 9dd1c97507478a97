"""The ``anthropic`` provider against the scripted Anthropic upstream (tests/anthropic_upstream.py),
served by uvicorn on loopback: native pass-through, chat translation (JSON and stream), errors,
headers and discovery."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import SecretStr

from tests.anthropic_upstream import AnthropicUpstream, message_events, text_message, tool_use_message
from tests.anthropic_wire import parse_sse, replay_stream
from tests.support import serve_app_in_thread
from vte_proxy.anthropic.ids import split_signature
from vte_proxy.config import ProviderConfig
from vte_proxy.errors import GatewayError, UpstreamError
from vte_proxy.providers import build_provider
from vte_proxy.providers.anthropic import AnthropicProvider
from vte_proxy.providers.base import Call, JsonAnswer, StreamAnswer
from vte_proxy.routing import Target

KEY = "sk-ant-test-0123456789"
SIG = "+vv8/f7/c2lnLWJ5dGVzIQ=="
TARGET = Target("claude/claude-test", "claude", "claude-test")
USER = {"role": "user", "content": "hi"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[AnthropicUpstream, str]]:
    up = AnthropicUpstream(api_key=KEY)
    with serve_app_in_thread(up.app) as server:
        yield up, server.url


@pytest.fixture
def up(upstream: tuple[AnthropicUpstream, str]) -> AnthropicUpstream:
    upstream[0].reset()
    return upstream[0]


def provider(url: str, **kw: Any) -> AnthropicProvider:
    config = ProviderConfig(name="claude", type="anthropic", base_url=url, api_key=SecretStr(KEY),
                            models=("claude-test",), **kw)
    built = build_provider(config)
    assert isinstance(built, AnthropicProvider)
    return built


async def collect(answer: StreamAnswer) -> list[bytes]:
    try:
        return [ev async for batch in answer.events for ev in batch]
    finally:
        await answer.close()


async def test_native_messages_pass_through_untouched_but_model(up: AnthropicUpstream,
                                                                upstream: tuple[Any, str]) -> None:
    p = provider(upstream[1])
    up.push_json(text_message("hello"))
    block = {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    body = {"model": "claude/claude-test", "max_tokens": 50, "messages": [{"role": "user", "content": [block]}],
        "thinking": {"type": "adaptive"}, "context_management": {"edits": []}, "unknown_future_field": 1}
    headers = {"anthropic-version": "2099-01-01", "anthropic-beta": "context-management-2025-06-27"}
    answer = await p.send(Call("messages", body, TARGET, stream=False, headers=headers, dialect="anthropic"))
    assert isinstance(answer, JsonAnswer) and answer.body["content"][0]["text"] == "hello"
    sent = up.requests[0]
    assert sent.body == {**body, "model": "claude-test"}
    assert sent.headers["x-api-key"] == KEY and "authorization" not in sent.headers
    assert sent.headers["anthropic-version"] == "2099-01-01"
    assert sent.headers["anthropic-beta"] == "context-management-2025-06-27"
    await p.aclose()


async def test_configured_betas_join_the_clients(up: AnthropicUpstream, upstream: tuple[Any, str]) -> None:
    p = provider(upstream[1], headers={"anthropic-beta": "context-1m-2025-08-07"})
    up.push_json(text_message("a"))
    up.push_json(text_message("b"))
    body = {"model": "x", "max_tokens": 5, "messages": [USER]}
    await p.send(Call("messages", body, TARGET, stream=False, dialect="anthropic",
                      headers={"anthropic-beta": "interleaved-thinking-2025-05-14,context-1m-2025-08-07"}))
    await p.send(Call("messages", body, TARGET, stream=False, dialect="anthropic"))
    assert up.requests[0].headers["anthropic-beta"] == "context-1m-2025-08-07,interleaved-thinking-2025-05-14"
    assert up.requests[1].headers["anthropic-beta"] == "context-1m-2025-08-07"
    await p.aclose()


async def test_native_stream_is_passed_as_anthropic_events(up: AnthropicUpstream, upstream: tuple[Any, str]) -> None:
    p = provider(upstream[1])
    up.push_stream(message_events(text_message("hello there")))
    body = {"model": "x", "max_tokens": 50, "messages": [USER]}
    answer = await p.send(Call("messages", body, TARGET, stream=True, dialect="anthropic"))
    assert isinstance(answer, StreamAnswer)
    events = parse_sse(b"\n\n".join(await collect(answer)) + b"\n\n")
    assert replay_stream(events).content[0].text == "hello there"  # type: ignore[union-attr]
    assert up.requests[0].body["stream"] is True and up.requests[0].headers["anthropic-version"] == "2023-06-01"
    await p.aclose()


async def test_count_tokens_is_native(up: AnthropicUpstream, upstream: tuple[Any, str]) -> None:
    p = provider(upstream[1])
    body = {"model": "x", "messages": [USER], "system": "s"}
    answer = await p.send(Call("messages/count_tokens", body, TARGET, stream=False, dialect="anthropic"))
    assert isinstance(answer, JsonAnswer) and answer.body == {"input_tokens": 42}
    assert up.requests[0].path == "/v1/messages/count_tokens" and up.requests[0].body["model"] == "claude-test"
    await p.aclose()


async def test_chat_is_translated_both_ways(up: AnthropicUpstream, upstream: tuple[Any, str]) -> None:
    p = provider(upstream[1])
    up.push_json(text_message("hello", usage={"input_tokens": 5, "cache_read_input_tokens": 100,
                                              "cache_creation_input_tokens": 7, "output_tokens": 2}))
    body = {"model": "claude/claude-test", "messages": [{"role": "system", "content": "be nice"}, USER]}
    answer = await p.send(Call("chat/completions", body, TARGET, stream=False))
    assert isinstance(answer, JsonAnswer)
    chat = ChatCompletion.model_validate(answer.body)
    assert chat.choices[0].message.content == "hello" and chat.model == "claude-test"  # shaping renames
    assert chat.usage is not None and chat.usage.prompt_tokens == 112 and chat.usage.completion_tokens == 2
    assert chat.usage.prompt_tokens_details is not None and chat.usage.prompt_tokens_details.cached_tokens == 100
    sent = up.requests[0].body
    assert sent["system"] == [{"type": "text", "text": "be nice"}] and sent["max_tokens"] == 4096
    await p.aclose()


async def test_chat_stream_with_thinking_and_tools(up: AnthropicUpstream, upstream: tuple[Any, str]) -> None:
    p = provider(upstream[1])
    up.push_stream(message_events(tool_use_message("get_weather", {"city": "Paris"}, thinking=("plan", SIG),
                                                   usage={"cache_read_input_tokens": 30})))
    body = {"model": "m", "stream": True, "messages": [USER], "tools": [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}
    answer = await p.send(Call("chat/completions", body, TARGET, stream=True))
    assert isinstance(answer, StreamAnswer)
    events = await collect(answer)
    assert events[-1] == b"data: [DONE]"
    chunks = [ChatCompletionChunk.model_validate(orjson.loads(ev[6:])) for ev in events[:-1]]
    calls = [tc for c in chunks for ch in c.choices for tc in ch.delta.tool_calls or ()]
    assert split_signature(calls[0].id or "") == ("toolu_01abc", SIG)
    assert "".join(tc.function.arguments or "" for tc in calls if tc.function) == '{"city": "Paris"}'
    assert [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason] == ["tool_calls"]
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == 42 and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 30
    await p.aclose()


async def test_cut_chat_stream_raises_truncated(up: AnthropicUpstream, upstream: tuple[Any, str]) -> None:
    p = provider(upstream[1])
    up.push_stream(message_events(text_message("hello there"))[:5], abort=True)
    answer = await p.send(Call("chat/completions", {"model": "m", "messages": [USER]}, TARGET, stream=True))
    assert isinstance(answer, StreamAnswer)
    with pytest.raises(UpstreamError) as info:
        await collect(answer)
    assert info.value.reason == "truncated"
    await p.aclose()


async def test_mid_stream_error_event_raises(up: AnthropicUpstream, upstream: tuple[Any, str]) -> None:
    p = provider(upstream[1])
    events = message_events(text_message("hello"))[:3]
    up.push_stream([*events, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}])
    answer = await p.send(Call("chat/completions", {"model": "m", "messages": [USER]}, TARGET, stream=True))
    assert isinstance(answer, StreamAnswer)
    with pytest.raises(UpstreamError) as info:
        await collect(answer)
    assert info.value.status == 529 and b"Overloaded" in info.value.json()
    await p.aclose()


@pytest.mark.parametrize("native", [True, False])
async def test_errors_native_and_translated(up: AnthropicUpstream, upstream: tuple[Any, str], native: bool) -> None:
    p = provider(upstream[1])
    up.push_error(429, f"rate limited {KEY}", headers={"retry-after": "7"})
    endpoint, body = ("messages", {"model": "m", "max_tokens": 5, "messages": [USER]}) if native else (
        "chat/completions", {"model": "m", "messages": [USER]})
    with pytest.raises(UpstreamError) as info:
        await p.send(Call(endpoint, body, TARGET, stream=False, dialect="anthropic" if native else "openai"))
    err = info.value
    assert err.status == 429 and err.retryable and err.headers == {"retry-after": "7"}
    decoded = orjson.loads(err.json())
    assert KEY not in err.json().decode()
    if native:
        assert decoded == {"type": "error", "error": {"type": "rate_limit_error", "message": "rate limited [redacted]"}}
    else:
        assert decoded["error"]["type"] == "rate_limit_error" and "[redacted]" in decoded["error"]["message"]
    await p.aclose()


async def test_bad_key_and_untranslatable_body(upstream: tuple[Any, str], up: AnthropicUpstream) -> None:
    config = ProviderConfig(name="claude", type="anthropic", base_url=upstream[1], api_key=SecretStr("wrong-key-1"),
                            models=("claude-test",))
    p = AnthropicProvider(config)
    with pytest.raises(UpstreamError) as info:
        await p.send(Call("messages", {"model": "m", "max_tokens": 5, "messages": [USER]}, TARGET, stream=False,
                          dialect="anthropic"))
    assert info.value.status == 401 and not info.value.retryable
    with pytest.raises(GatewayError) as bad:
        await p.send(Call("chat/completions", {"model": "m", "messages": []}, TARGET, stream=False))
    assert bad.value.status == 400 and len(up.requests) == 1
    await p.aclose()


async def test_discovery_lists_models(up: AnthropicUpstream, upstream: tuple[Any, str]) -> None:
    p = provider(upstream[1] + "/v1")  # a base URL with /v1 works too
    assert await p.discover() == ("claude-test", "claude-other")
    assert up.requests[0].query == {"limit": "1000"} and up.requests[0].headers["x-api-key"] == KEY
    await p.aclose()


def test_config_rules() -> None:
    with pytest.raises(ValueError, match=r"api_key \(or api_keys\) is required for type anthropic"):
        ProviderConfig(name="c", type="anthropic", models=("m",))
    config = ProviderConfig(name="c", type="anthropic", api_key=SecretStr("k" * 10), discover={"enabled": True})
    assert config.base_url is None and config.discover.enabled
