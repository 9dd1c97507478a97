"""Anthropic Messages wire checks built on the ``anthropic`` SDK's own types.

``validate_messages_request`` checks a request body against the SDK's ``MessageCreateParams``
TypedDicts (pydantic validates TypedDicts; the SDK's ``Iterable`` fields validate lazily, so
every nested iterator is drained to check its items too) plus the server-side rules the types
cannot say (roles alternate-able, non-empty messages, tool ids matched by their results).
``replay_stream`` folds named SSE events through the SDK's own stream accumulator, the code
``client.messages.stream(...)`` runs, and returns the final ``Message``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from pydantic import TypeAdapter, ValidationError

_REQUEST = TypeAdapter(MessageCreateParamsNonStreaming)
_EVENT: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
EVENT_NAMES = {"message_start", "content_block_start", "content_block_delta", "content_block_stop",
               "message_delta", "message_stop", "ping", "error"}


class MessagesRequestError(ValueError):
    """A body Anthropic's API would refuse (the message says why)."""


def _drain(value: Any) -> Any:
    """``value`` with every lazily validated iterator consumed (which validates its items)."""
    if isinstance(value, dict):
        return {k: _drain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_drain(v) for v in value]
    if isinstance(value, Iterator) or type(value).__name__ == "ValidatorIterator":
        return [_drain(v) for v in value]
    return value


def _check_tools_matched(messages: list[dict[str, Any]]) -> None:
    pending: set[str] = set()
    for turn in messages:
        content = turn["content"] if isinstance(turn["content"], list) else []
        results = {b["tool_use_id"] for b in content if b.get("type") == "tool_result"}
        if pending and results != pending:
            raise MessagesRequestError(f"tool_use ids {sorted(pending)} need tool_result blocks right after them")
        pending = {b["id"] for b in content if b.get("type") == "tool_use"}


def validate_messages_request(body: dict[str, Any]) -> dict[str, Any]:
    """The body validated against the SDK's types and Anthropic's rules; raises MessagesRequestError."""
    try:
        checked = _drain(_REQUEST.validate_python({k: v for k, v in body.items() if k != "stream"}))
    except ValidationError as exc:
        raise MessagesRequestError(str(exc)) from None
    messages = checked["messages"]
    if not messages:
        raise MessagesRequestError("messages: at least one message is required")
    if messages[0]["role"] == "assistant" and len(messages) == 1:
        raise MessagesRequestError("messages: the conversation must not be a lone assistant turn")
    _check_tools_matched([m for m in body["messages"] if m.get("role") != "system"])
    return checked


def parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Named SSE events of a body: (event name, data object); the name must match data.type."""
    out = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
        name, data = fields[b"event"].decode(), orjson.loads(fields[b"data"])
        assert name in EVENT_NAMES and data["type"] == name, block
        out.append((name, data))
    return out


def replay_stream(events: list[tuple[str, dict[str, Any]]]) -> Message:
    """The final message the SDK's stream helper would build from these events."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for name, data in events:
        if name in ("ping", "error"):
            continue
        snapshot = accumulate_event(event=_EVENT.validate_python(data), current_snapshot=snapshot,
                                    json_bufs=json_bufs)
    assert snapshot is not None, "no message_start"
    return Message.model_validate(snapshot.model_dump())
