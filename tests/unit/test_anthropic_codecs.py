"""The Anthropic Messages <-> OpenAI chat codecs (vte_proxy.anthropic), without a server.

Messages bodies the codecs produce go through the ``anthropic`` SDK's own request types
(tests/anthropic_wire.py); Anthropic answers and streams through its ``Message`` type and its
stream accumulator; OpenAI answers and chunks through the ``openai`` SDK's types.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.anthropic_wire import parse_sse, replay_stream, validate_messages_request
from vte_proxy import anthropic as codec
from vte_proxy.anthropic.ids import split_signature, with_signature
from vte_proxy.anthropic.to_messages import DEFAULT_MAX_TOKENS
from vte_proxy.errors import GatewayError

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
SIG = "+vv8/f7/c2lnLWJ5dGVzIQ=="  # valid standard base64 with "+", "/" and padding
CC = {"type": "ephemeral", "ttl": "1h"}


def to_chat(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    validate_messages_request(body)
    before = copy.deepcopy(body)
    out = codec.messages_to_chat(body, **kw)
    assert body == before, "messages_to_chat mutated its input"
    assert b"cache_control" not in orjson.dumps(out)
    return out


def to_messages(body: dict[str, Any]) -> dict[str, Any]:
    before = copy.deepcopy(body)
    out = codec.chat_to_messages(body)
    assert body == before, "chat_to_messages mutated its input"
    validate_messages_request(out)
    return out


# --- (a) Messages request -> chat request -------------------------------------------------------

def claude_code_body() -> dict[str, Any]:
    """A request shaped like Claude Code's: system blocks, a system turn, cache_control everywhere,
    thinking, output_config, context_management, metadata, many tools with large schemas."""
    big_schema = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 200}
                                                   for i in range(40)}, "required": ["p0"],
                  "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#"}
    tools = [{"name": f"Tool{i}", "description": f"tool {i}", "input_schema": big_schema,
              **({"cache_control": CC} if i == 23 else {})} for i in range(24)]
    return {
        "model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code."},
                   {"type": "text", "text": "Be brief.", "cache_control": CC}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "list files", "cache_control": CC}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should run ls", "signature": SIG},
                {"type": "text", "text": "Running ls."},
                {"type": "tool_use", "id": "toolu_01", "name": "Tool0", "input": {"p0": "ls"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "a.py"}],
                 "cache_control": CC},
                {"type": "text", "text": "thanks"}]},
            {"role": "system", "content": "Reminder: stay on task."},
        ],
        "tools": tools, "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "metadata": {"user_id": "user_abc_account__session_123"},
        "temperature": 1, "top_k": 5, "stop_sequences": ["STOP"],
    }


def test_claude_code_request_translates_to_chat() -> None:
    body = claude_code_body()
    out = to_chat(body)
    msgs = out["messages"]
    assert msgs[0] == {"role": "system", "content": "You are Claude Code.\n\nBe brief."}
    assert msgs[1] == {"role": "user", "content": "list files"}
    assert msgs[2]["role"] == "assistant" and msgs[2]["content"] == "Running ls."
    assert msgs[2]["tool_calls"] == [{"id": "toolu_01", "type": "function",
                                      "function": {"name": "Tool0", "arguments": '{"p0":"ls"}'}}]
    assert "reasoning_content" not in msgs[2] and "thinking_blocks" not in msgs[2]
    assert msgs[3] == {"role": "tool", "tool_call_id": "toolu_01", "content": "a.py"}
    assert msgs[4] == {"role": "user", "content": "thanks"}
    assert msgs[5] == {"role": "system", "content": "Reminder: stay on task."}
    assert len(out["tools"]) == 24
    assert out["tools"][0]["function"]["parameters"] == body["tools"][0]["input_schema"]  # intact
    assert out["tool_choice"] == "auto" and out["parallel_tool_calls"] is False
    assert out["reasoning_effort"] == "high" and out["user"] == "user_abc_account__session_123"
    long_user = to_chat({**body, "metadata": {"user_id": "u" * 200}})["user"]
    assert long_user.startswith("sha256:") and len(long_user) <= 64
    assert out["stop"] == ["STOP"] and out["max_tokens"] == 32000 and out["stream"] is True
    for dropped in ("top_k", "thinking", "output_config", "context_management", "metadata", "system"):
        assert dropped not in out


def test_thinking_kept_for_a_canonical_round_trip() -> None:
    body = claude_code_body()
    chat = to_chat(body, keep_thinking=True)
    assert chat["messages"][2]["reasoning_content"] == "I should run ls"
    back = to_messages(chat)
    assert back["messages"][1]["content"][0] == {"type": "thinking", "thinking": "I should run ls", "signature": SIG}
    assert back["messages"][2]["content"][0]["tool_use_id"] == "toolu_01"


@pytest.mark.parametrize(("thinking", "effort"), [
    ({"type": "enabled", "budget_tokens": 1024}, "low"), ({"type": "enabled", "budget_tokens": 8000}, "medium"),
    ({"type": "enabled", "budget_tokens": 20000}, "high"), ({"type": "adaptive"}, None), ({"type": "disabled"}, None)])
def test_thinking_becomes_reasoning_effort(thinking: dict[str, Any], effort: str | None) -> None:
    # Claude Code's own pair (adaptive + effort high) leaves the model's default: gpt-4o refuses reasoning_effort.
    out = to_chat({"model": "m", "max_tokens": 64000, "thinking": thinking, "output_config": {"effort": "high"},
                   "messages": [{"role": "user", "content": "hi"}]})
    assert out.get("reasoning_effort") == effort


def test_structured_output_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}
    out = to_chat({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                   "output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert out["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def test_images_documents_and_tool_result_images() -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc body"},
             "title": "Notes"},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
            {"type": "document", "source": {"type": "url", "url": "https://x.test/d.pdf"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": True, "content": [
            {"type": "text", "text": "bad"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]}]}
    msgs = to_chat(body)["messages"]
    parts = msgs[0]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert parts[1] == {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}}
    assert parts[2] == {"type": "text", "text": "Notes\n\ndoc body"}
    assert parts[3]["type"] == "file" and parts[3]["file"]["file_data"] == "data:application/pdf;base64,JVBE"
    assert "https://x.test/d.pdf" in parts[4]["text"]
    assert msgs[1]["content"] is None and msgs[1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert msgs[2] == {"role": "tool", "tool_call_id": "t1", "content": "Error: bad"}
    assert msgs[3]["role"] == "user" and msgs[3]["content"][0]["type"] == "image_url"


def test_tool_choice_variants_and_server_tools() -> None:
    tool = {"name": "f", "input_schema": {"type": "object"}}
    server = {"type": "web_search_20250305", "name": "web_search"}
    base = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [tool, server]}
    assert to_chat({**base, "tool_choice": {"type": "any"}})["tool_choice"] == "required"
    assert to_chat({**base, "tool_choice": {"type": "none"}})["tool_choice"] == "none"
    out = to_chat({**base, "tool_choice": {"type": "tool", "name": "f"}})
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}} and len(out["tools"]) == 1
    only_server = to_chat({**base, "tools": [server], "tool_choice": {"type": "auto"}})
    assert "tools" not in only_server and "tool_choice" not in only_server


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": [{"role": "user", "content": "x"}]},
    {"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]},
    {"model": "m", "max_tokens": 5, "messages": "hi"},
    {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "audio"}]}]},
])
def test_invalid_messages_requests_are_400(body: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as info:
        codec.messages_to_chat(body)
    assert info.value.status == 400


# --- (b) chat answer -> Messages answer ----------------------------------------------------------

def completion(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-x",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13,
                               "prompt_tokens_details": {"cached_tokens": 4}}}


@pytest.mark.parametrize(("finish", "reason"), [("stop", "end_turn"), ("length", "max_tokens"),
                                                ("tool_calls", "tool_use"), ("content_filter", "refusal")])
def test_chat_answer_to_message(finish: str, reason: str) -> None:
    ChatCompletion.model_validate(completion({"content": "hi"}, finish))
    msg = Message.model_validate(codec.chat_to_message(completion({"content": "hi"}, finish), "claude/x"))
    assert msg.stop_reason == reason and msg.model == "claude/x" and msg.content[0].text == "hi"  # type: ignore[union-attr]
    assert msg.usage.input_tokens == 6 and msg.usage.cache_read_input_tokens == 4 and msg.usage.output_tokens == 3


def test_chat_answer_with_reasoning_and_tools() -> None:
    answer = completion({"content": None, "reasoning_content": "think", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "not json"}}]}, "stop")
    msg = Message.model_validate(codec.chat_to_message(answer, "m"))
    kinds = [b.type for b in msg.content]
    assert kinds == ["thinking", "tool_use", "tool_use"] and msg.stop_reason == "tool_use"
    assert msg.content[1].input == {"a": 1} and msg.content[2].input == {"arguments": "not json"}  # type: ignore[union-attr]


# --- (c) chat stream -> Anthropic events ---------------------------------------------------------

def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, Any] | None = None,
          choices: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
                           "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []}
    if usage:
        out["usage"] = usage
    ChatCompletionChunk.model_validate(out)
    return out


def run_chat_stream(chunks: list[dict[str, Any]], finish: bool = True) -> list[tuple[str, dict[str, Any]]]:
    translator = codec.ChatToMessages("claude/x", input_tokens=7)
    raw = b"\n\n".join(codec.sse(name, data) for c in chunks for name, data in translator.feed(c))
    if finish:
        raw += b"\n\n" + b"\n\n".join(codec.sse(n, d) for n, d in translator.finish())
    return parse_sse(raw + b"\n\n")


def test_chat_stream_to_exact_event_sequence() -> None:
    usage = {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29,
             "prompt_tokens_details": {"cached_tokens": 5}}
    events = run_chat_stream([
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "hmm"}), chunk({"reasoning_content": " ok"}),
        chunk({"content": "Hel"}), chunk({"content": "lo"}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "f", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "g", "arguments": "{}"}}]}),
        chunk(finish="tool_calls"), chunk(usage=usage, choices=False)])
    names = [n for n, _ in events]
    assert names == ["message_start",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    assert events[0][1]["message"]["usage"]["input_tokens"] == 7
    assert events[-2][1]["usage"] == {"input_tokens": 15, "output_tokens": 9, "cache_creation_input_tokens": 0,
                                      "cache_read_input_tokens": 5}
    msg = replay_stream(events)
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert msg.content[0].thinking == "hmm ok" and msg.content[1].text == "Hello"  # type: ignore[union-attr]
    assert msg.content[2].input == {"x": 1} and msg.content[3].id == "call_b"  # type: ignore[union-attr]
    assert msg.stop_reason == "tool_use" and msg.usage.output_tokens == 9


def test_chat_stream_without_usage_and_empty_answer() -> None:
    events = run_chat_stream([chunk({"role": "assistant"}), chunk(finish="length")])
    assert [n for n, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert replay_stream(events).stop_reason == "max_tokens"


def test_chat_stream_refusal_becomes_text() -> None:
    events = run_chat_stream([chunk({"role": "assistant"}), chunk({"refusal": "I can't help"}),
                              chunk(finish="content_filter")])
    msg = replay_stream(events)
    assert msg.content[0].text == "I can't help" and msg.stop_reason == "refusal"  # type: ignore[union-attr]


def test_error_event_shape() -> None:
    [(name, data)] = parse_sse(codec.error_event(529, "busy") + b"\n\n")
    assert name == "error" and data == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}


# --- (d) chat request -> Messages request --------------------------------------------------------

def test_chat_request_to_messages() -> None:
    body = {"model": "m", "messages": [
        {"role": "system", "content": "sys"}, {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                                     {"type": "image_url", "image_url": {"url": "https://x.test/i.png"}}]},
        {"role": "assistant", "content": "calling", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"q": "a"}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "r1"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "r2"}]},
        {"role": "user", "content": "next"}],
        "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {
            "type": "object", "properties": {"q": {"type": "string"}}}, "strict": True}}],
        "tool_choice": "required", "parallel_tool_calls": False, "stop": "END", "temperature": 1.7,
        "user": "u1", "stream": True}
    out = to_messages(body)
    assert out["system"] == [{"type": "text", "text": "sys"}, {"type": "text", "text": "dev"}]
    assert out["max_tokens"] == DEFAULT_MAX_TOKENS and out["stop_sequences"] == ["END"] and out["temperature"] == 1.0
    user, assistant, results = out["messages"]
    assert user["content"][1]["source"] == {"type": "base64", "media_type": "image/png", "data": PNG}
    assert user["content"][2]["source"] == {"type": "url", "url": "https://x.test/i.png"}
    assert assistant["content"][1] == {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"q": "a"}}
    assert [b["type"] for b in results["content"]] == ["tool_result", "tool_result", "text"]
    assert results["content"][1]["content"] == [{"type": "text", "text": "r2"}]
    schema = body["tools"][0]["function"]["parameters"]
    assert out["tools"] == [{"name": "f", "description": "d", "input_schema": schema}]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["metadata"] == {"user_id": "u1"} and out["stream"] is True


def test_assistant_refusal_parts_become_text() -> None:
    out = to_messages({"model": "m", "messages": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}, {"type": "text", "text": "sorry"}]},
        {"role": "user", "content": "b"}]})
    assert out["messages"][1]["content"] == [{"type": "text", "text": "no"}, {"type": "text", "text": "sorry"}]


def test_reasoning_effort_becomes_thinking() -> None:
    out = to_messages({"model": "m", "max_tokens": 100, "reasoning_effort": "medium", "temperature": 0.2,
                       "messages": [{"role": "user", "content": "x"}]})
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert out["max_tokens"] > 8192 and "temperature" not in out


def test_signature_rides_in_tool_call_id_and_comes_back() -> None:
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "tool_use",
              "content": [{"type": "thinking", "thinking": "plan", "signature": SIG},
                          {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": 1}}],
              "usage": {"input_tokens": 3, "output_tokens": 2}}
    chat = ChatCompletion.model_validate(codec.message_to_chat(answer, "claude/c")).model_dump(exclude_none=True)
    message = chat["choices"][0]["message"]
    call_id = message["tool_calls"][0]["id"]
    assert split_signature(call_id) == ("toolu_9", SIG) and message["reasoning_content"] == "plan"
    # An OpenAI client that keeps only the standard fields plus reasoning_content:
    replay = {"role": "assistant", "content": None, "reasoning_content": "plan", "tool_calls": message["tool_calls"]}
    out = to_messages({"model": "m", "messages": [{"role": "user", "content": "go"}, replay,
                                                  {"role": "tool", "tool_call_id": call_id, "content": "ok"}]})
    assert out["messages"][1]["content"][0] == {"type": "thinking", "thinking": "plan", "signature": SIG}
    assert out["messages"][1]["content"][1]["id"] == "toolu_9"
    assert out["messages"][2]["content"][0]["tool_use_id"] == "toolu_9"


def test_unsigned_reasoning_is_dropped_and_ids_without_signature_kept() -> None:
    assert with_signature("toolu_1", None) == "toolu_1" and split_signature("toolu_1") == ("toolu_1", None)
    out = to_messages({"model": "m", "messages": [{"role": "user", "content": "a"},
                                                  {"role": "assistant", "content": "b", "reasoning_content": "r"},
                                                  {"role": "user", "content": "c"}]})
    assert out["messages"][1]["content"] == [{"type": "text", "text": "b"}]


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": []},
    {"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]},
    {"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
    {"model": "m", "messages": [{"role": "function", "content": "x"}]},
])
def test_untranslatable_chat_requests_are_400(body: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as info:
        codec.chat_to_messages(body)
    assert info.value.status == 400


# --- (e) Messages answer -> chat answer, (f) Anthropic events -> chat chunks --------------------

@pytest.mark.parametrize(("reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter")])
def test_message_to_chat_answer(reason: str, finish: str) -> None:
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": reason,
              "stop_sequence": None, "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
              "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                        "cache_creation_input_tokens": 20}}
    Message.model_validate(answer)
    chat = ChatCompletion.model_validate(codec.message_to_chat(answer, "claude/c"))
    assert chat.choices[0].finish_reason == finish and chat.choices[0].message.content == "ab"
    assert chat.model == "claude/c" and chat.usage is not None
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens, chat.usage.total_tokens) == (130, 5, 135)
    assert chat.usage.prompt_tokens_details is not None and chat.usage.prompt_tokens_details.cached_tokens == 100


def anthropic_events() -> list[tuple[str, dict[str, Any]]]:
    usage0 = {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 50, "cache_creation_input_tokens": 0}
    return [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage0}}),
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": "plan"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "signature_delta", "signature": SIG}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": "Hi"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
            "type": "tool_use", "id": "toolu_5", "name": "f", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"a":'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2,
                                 "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 2}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"output_tokens": 12}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_anthropic_stream_to_chat_chunks() -> None:
    events = anthropic_events()
    replay_stream(events)  # the script itself is a valid Anthropic stream
    translator = codec.MessagesToChat("claude/c")
    chunks = [c for name, data in events for c in translator.feed(name, data)] + [translator.usage_chunk()]
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert translator.finished and translator.stopped
    deltas = [p.choices[0].delta for p in parsed if p.choices]
    assert deltas[0].role == "assistant"
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "plan"
    assert "".join(d.content or "" for d in deltas) == "Hi"
    calls = [tc for d in deltas for tc in d.tool_calls or ()]
    assert split_signature(calls[0].id or "") == ("toolu_5", SIG)
    assert "".join(tc.function.arguments or "" for tc in calls if tc.function) == '{"a":1}'
    assert parsed[-2].choices[0].finish_reason == "tool_calls"
    usage = parsed[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (60, 12)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 50


def test_anthropic_stream_error_event_is_noted() -> None:
    translator = codec.MessagesToChat("m")
    translator.feed("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert translator.error == {"type": "overloaded_error", "message": "Overloaded"} and not translator.finished


# --- (g) errors, (h) count_tokens ----------------------------------------------------------------

@pytest.mark.parametrize(("status", "body", "kind", "message"), [
    (401, b'{"error": {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}}',
     "authentication_error", "bad key"),
    (429, b'{"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}',
     "rate_limit_error", "Resource exhausted"),
    (529, b"upstream overloaded", "overloaded_error", "upstream overloaded"),
    (413, b"", "request_too_large", "upstream error"),
    (503, b'{"detail": "x"}', "api_error", '{"detail": "x"}'),
])
def test_upstream_errors_to_anthropic(status: int, body: bytes, kind: str, message: str) -> None:
    assert codec.to_anthropic(status, body) == {"type": "error", "error": {"type": kind, "message": message}}


def test_anthropic_error_bodies_kept_and_translated_to_openai() -> None:
    native = b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    assert codec.to_anthropic(529, native) == orjson.loads(native)
    assert codec.to_openai(529, native) == {"error": {"message": "Overloaded", "type": "service_unavailable",
                                                      "code": "overloaded_error"}}
    assert codec.to_openai(400, b"oops")["error"]["type"] == "invalid_request_error"


def test_count_tokens_estimate() -> None:
    small = codec.count_tokens({"model": "m", "messages": [{"role": "user", "content": "hello world"}]})
    body = claude_code_body()
    big = codec.count_tokens(body)
    assert 0 < small < 20
    assert big > 24 * 40 * 20  # the 24 large tool schemas dominate
    with_image = codec.count_tokens({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]})
    assert with_image >= 1600


def test_unsigned_thinking_is_left_out_for_claude() -> None:
    from vte_proxy.anthropic.to_messages import without_unsigned_thinking

    signed = [{"role": "user", "content": "a"},
              {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": SIG},
                                                {"type": "text", "text": "b"}]}]
    assert without_unsigned_thinking(signed) is signed
    mixed = [{"role": "user", "content": "a"},
             {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": ""},
                                               {"type": "text", "text": "b"}]},
             {"role": "assistant", "content": [{"type": "thinking", "thinking": "only", "signature": ""}]},
             {"role": "user", "content": "c"}]
    out = without_unsigned_thinking(mixed)
    assert out == [mixed[0], {"role": "assistant", "content": [{"type": "text", "text": "b"}]}, mixed[3]]
    assert mixed[1]["content"][0]["signature"] == ""  # the input is left alone
