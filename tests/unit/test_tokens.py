"""Offline token counting (vte_proxy.tokens): the bundled cl100k vocabulary, no network."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from vte_proxy import tokens


def test_counts_known_cl100k_figures() -> None:
    assert tokens.count_text("") == 0
    assert tokens.count_text("hello world") == 2
    assert tokens.count_text("hello world, this is a test") == 7
    assert tokens.count_text("<|endoftext|>") > 1  # special markers count as plain text, never raise


def test_loads_without_any_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("token counting tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(tokens, "_encoding", None)
    assert tokens.count_text("offline" * 1 + " offline" * 99) == 100


def test_a_tampered_vocabulary_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "cl100k_base.tiktoken"
    bad.write_bytes(b"aGVsbG8= 0\n")
    monkeypatch.setattr(tokens, "_vocabulary_path", lambda: bad)
    with pytest.raises(RuntimeError, match="SHA-256"):
        tokens._load()


def test_chat_counts_messages_tools_and_images() -> None:
    text_only = tokens.count_chat([{"role": "user", "content": "hello world"}])
    assert text_only == tokens.REPLY_PRIMER + tokens.MESSAGE_OVERHEAD + 2
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert tokens.count_chat([{"role": "user", "content": "hello world"}], [tool]) > text_only
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,x"}}]}]
    assert tokens.count_chat(image) >= tokens.IMAGE_TOKENS
    call = {"role": "assistant", "content": None, "reasoning_content": "think",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}
    assert tokens.count_message(call) > tokens.MESSAGE_OVERHEAD + 3
