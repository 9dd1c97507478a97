"""Offline usage estimates for answers without usage: which text is counted, streams extrapolated."""

from __future__ import annotations

import orjson

from vte_proxy import usage_estimate
from vte_proxy.sse import event
from vte_proxy.usage_estimate import answer_text, count_text, from_events, from_json, prompt_text


def test_prompt_text_of_every_request_shape() -> None:
    chat = {"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"},
                                                                                         {"type": "image_url"}]}]}
    assert list(prompt_text(chat)) == ["a", "b"]
    assert list(prompt_text({"prompt": "p"})) == ["p"]
    assert list(prompt_text({"instructions": "i", "input": [{"role": "user", "content": "x"}]})) == ["i", "x"]
    anthropic = {"system": [{"type": "text", "text": "s"}], "messages": [{"role": "user", "content": "m"}]}
    assert list(prompt_text(anthropic)) == ["s", "m"]


def test_answer_text_of_every_answer_shape() -> None:
    tool = {"function": {"name": "f", "arguments": "{}"}}
    chat = {"choices": [{"message": {"content": "hi", "tool_calls": [tool]}}]}
    assert list(answer_text(chat)) == ["hi", "f", "{}"]
    assert list(answer_text({"choices": [{"delta": {"content": "d"}}]})) == ["d"]
    assert list(answer_text({"choices": [{"text": "t"}]})) == ["t"]
    assert list(answer_text({"output": [{"content": [{"type": "output_text", "text": "o"}]}]})) == ["o"]
    assert list(answer_text({"type": "response.output_text.delta", "delta": "r"})) == ["r"]
    assert list(answer_text({"content": [{"type": "text", "text": "c"}]})) == ["c"]
    assert list(answer_text({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}})) == ["x"]


def test_plain_count_is_a_token_per_short_run() -> None:
    assert usage_estimate._plain_count("Hello, world! 12345") == 6  # Hello , world ! 123 45
    assert usage_estimate._plain_count("") == 0


def test_json_answer_estimate() -> None:
    usage = from_json({"messages": [{"role": "user", "content": "one two"}]},
                      orjson.dumps({"choices": [{"message": {"content": "three four five"}}]}))
    assert usage == {"prompt_tokens": count_text("one two"), "completion_tokens": count_text("three four five"),
                     "total_tokens": count_text("one two") + count_text("three four five")}


def test_stream_estimate_extrapolates_beyond_what_was_kept() -> None:
    events = [event({"choices": [{"delta": {"content": "word"}}]}), b"data: [DONE]"]
    kept = sum(map(len, events))
    one = from_events({}, events, kept, kept)["completion_tokens"]
    assert one == count_text("word")
    assert from_events({}, events, kept, kept * 3)["completion_tokens"] == 3 * one
