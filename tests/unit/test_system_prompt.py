"""System prompt injection: precedence, prepend/replace, OpenAI chat and Anthropic Messages bodies."""

from __future__ import annotations

import copy
from typing import Any

from vte_proxy.config import SystemPrompt
from vte_proxy.system_prompt import apply, apply_chat, apply_messages, effective

PRE = SystemPrompt(text="Answer in English.")
REP = SystemPrompt(text="You are terse.", mode="replace")


def test_the_most_specific_prompt_wins_whole() -> None:
    g, p, k = SystemPrompt(text="g"), SystemPrompt(text="p"), SystemPrompt(text="k")
    assert effective(g, p, k) is k
    assert effective(g, p, None) is p
    assert effective(g, None, None) is g
    assert effective(None, None, None) is None


def test_chat_prepend_without_a_system_message_adds_one() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    out = apply_chat(body, PRE)
    assert out["messages"] == [{"role": "system", "content": "Answer in English."}, {"role": "user", "content": "hi"}]
    assert body["messages"] == [{"role": "user", "content": "hi"}]  # the client's body is not changed


def test_chat_prepend_joins_the_clients_system_message() -> None:
    body = {"messages": [{"role": "system", "content": "Be kind.", "name": "x"}, {"role": "user", "content": "hi"}]}
    out = apply_chat(body, PRE)
    assert out["messages"][0] == {"role": "system", "content": "Answer in English.\n\nBe kind.", "name": "x"}
    assert len(out["messages"]) == 2


def test_chat_prepend_to_content_parts_and_developer_messages() -> None:
    parts = [{"type": "text", "text": "Be kind."}]
    out = apply_chat({"messages": [{"role": "developer", "content": parts}]}, PRE)
    assert out["messages"][0] == {"role": "developer",
                                  "content": [{"type": "text", "text": "Answer in English."}, *parts]}


def test_chat_replace_drops_every_client_system_message() -> None:
    body = {"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "hi"},
                         {"role": "developer", "content": "b"}]}
    assert apply_chat(body, REP)["messages"] == [{"role": "system", "content": "You are terse."},
                                                 {"role": "user", "content": "hi"}]


def test_chat_without_messages_or_prompt_is_unchanged() -> None:
    body: dict[str, Any] = {"prompt": "x"}
    assert apply_chat(body, PRE) is body
    assert apply_chat({"messages": []}, None) == {"messages": []}


def test_messages_prepend_to_a_string_a_list_and_nothing() -> None:
    assert apply_messages({"system": "Be kind."}, PRE)["system"] == "Answer in English.\n\nBe kind."
    blocks = [{"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}}]
    body = {"system": blocks}
    snapshot = copy.deepcopy(body)
    assert apply_messages(body, PRE)["system"] == [{"type": "text", "text": "Answer in English."}, *blocks]
    assert body == snapshot
    assert apply_messages({"messages": []}, PRE) == {"messages": [], "system": "Answer in English."}


def test_messages_replace() -> None:
    assert apply_messages({"system": [{"type": "text", "text": "x"}]}, REP)["system"] == "You are terse."


def test_apply_by_dialect() -> None:
    assert "system" in apply("anthropic", {"messages": []}, PRE)
    assert apply("openai", {"messages": []}, PRE)["messages"][0]["role"] == "system"
