"""Prompts and completions as the GenAI semantic conventions record them, for the trace spans
of keys with ``trace_content: true`` (:mod:`vte_proxy.tracing_spans`).

``gen_ai.input.messages`` and ``gen_ai.output.messages`` are JSON arrays of
``{"role", "parts": [{"type": "text", "content"} | {"type": "tool_call", "id", "name",
"arguments"} | {"type": "tool_call_response", "id", "response"} | {"type": <other block type>}]}``
(plus ``finish_reason`` on output messages), read from OpenAI chat, completions and Responses
bodies and from Anthropic Messages. Pure functions of dicts: no SDK, no I/O. Bounded: each
text part is cut at MAX_PART_CHARS, only the last MAX_MESSAGES messages are kept, and images,
audio or files appear as their type only, never their data.
"""

from __future__ import annotations

from typing import Any

import orjson

# Content capture bounds: each text part is cut, only the last messages are kept.
MAX_PART_CHARS = 4096
MAX_MESSAGES = 32


def _cut(text: str) -> str:
    return text if len(text) <= MAX_PART_CHARS else text[:MAX_PART_CHARS] + "...[truncated]"


def _text_parts(content: Any) -> list[dict[str, Any]]:
    """Message content (a string or a list of typed blocks) as convention parts; non-text
    blocks (images, audio, files) are named by their type, their data is never copied."""
    if isinstance(content, str):
        return [{"type": "text", "content": _cut(content)}]
    parts: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        text = block.get("text")
        if isinstance(text, str):
            parts.append({"type": "text", "content": _cut(text)})
        elif kind == "tool_use":
            parts.append({"type": "tool_call", "id": block.get("id"), "name": block.get("name"),
                          "arguments": block.get("input")})
        elif kind == "tool_result":
            parts.append({"type": "tool_call_response", "id": block.get("tool_use_id"),
                          "response": _cut(orjson.dumps(block.get("content")).decode())})
        elif isinstance(kind, str):
            parts.append({"type": kind})
    return parts


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    out = []
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            arguments = function.get("arguments")
            out.append({"type": "tool_call", "id": call.get("id"), "name": function.get("name"),
                        "arguments": _cut(arguments) if isinstance(arguments, str) else arguments})
    return out


def _message(message: Any) -> dict[str, Any] | None:
    if not isinstance(message, dict):
        return None
    role = message.get("role") if isinstance(message.get("role"), str) else "user"
    parts = _text_parts(message.get("content"))
    parts += _tool_calls(message.get("tool_calls"))
    if role == "tool":
        parts = [{"type": "tool_call_response", "id": message.get("tool_call_id"),
                  "response": parts[0]["content"] if parts and "content" in parts[0] else None}]
    return {"role": role, "parts": parts}


def input_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """``gen_ai.input.messages`` of a chat, completions, Responses or Anthropic Messages body
    (at most the last MAX_MESSAGES messages, each text part cut at MAX_PART_CHARS)."""
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        out.append({"role": "system", "parts": _text_parts(system)})
    source = body.get("messages")
    if source is None:
        source = body.get("input") if "input" in body else body.get("prompt")
    if isinstance(source, str):
        source = [{"role": "user", "content": source}]
    if isinstance(source, list) and source and all(isinstance(s, str) for s in source):  # completions prompts
        source = [{"role": "user", "content": s} for s in source]
    for message in source if isinstance(source, list) else ():
        converted = _message(message)
        if converted is not None:
            out.append(converted)
    return out[-MAX_MESSAGES:]


def output_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """``gen_ai.output.messages`` of an answer: chat or completions choices, Responses API
    output items, or an Anthropic message."""
    out: list[dict[str, Any]] = []
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict):
            converted = _message(message) or {"role": "assistant", "parts": []}
        else:
            text = choice.get("text")
            converted = {"role": "assistant", "parts": _text_parts(text) if isinstance(text, str) else []}
        converted["finish_reason"] = choice.get("finish_reason")
        out.append(converted)
    for item in body.get("output") or ():
        if isinstance(item, dict) and item.get("type") == "message":
            out.append({"role": "assistant", "parts": _text_parts(item.get("content"))})
        elif isinstance(item, dict) and item.get("type") == "function_call":
            out.append({"role": "assistant", "parts": [{"type": "tool_call", "id": item.get("call_id"),
                                                        "name": item.get("name"),
                                                        "arguments": item.get("arguments")}]})
    if body.get("type") == "message" and "content" in body:  # Anthropic Messages
        out.append({"role": "assistant", "parts": _text_parts(body.get("content")),
                    "finish_reason": body.get("stop_reason")})
    return out[-MAX_MESSAGES:]


class StreamContent:
    """The output of a streamed chat answer, for content capture: text and tool-call pieces
    of choice 0 and the finish reasons (decoded only for keys that opted in)."""

    __slots__ = ("_text", "_tools", "reasons")

    def __init__(self) -> None:
        self._text: list[str] = []
        self._tools: dict[int, dict[str, Any]] = {}
        self.reasons: list[str] = []

    def add(self, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str) and sum(map(len, self._text)) < MAX_PART_CHARS:
                self._text.append(delta["content"])
            for call in delta.get("tool_calls") or ():
                self._tool_piece(call)
            if isinstance(choice.get("finish_reason"), str):
                self.reasons.append(choice["finish_reason"])

    def _tool_piece(self, call: dict[str, Any]) -> None:
        slot = self._tools.setdefault(call.get("index", 0), {"type": "tool_call", "id": None, "name": "",
                                                             "arguments": ""})
        slot["id"] = call.get("id") or slot["id"]
        function = call.get("function") or {}
        slot["name"] += function.get("name") or ""
        slot["arguments"] += function.get("arguments") or ""

    def messages(self) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = [{"type": "text", "content": _cut("".join(self._text))}] if self._text else []
        parts += [self._tools[i] for i in sorted(self._tools)]
        if not parts:
            return []
        return [{"role": "assistant", "parts": parts, "finish_reason": self.reasons[-1] if self.reasons else None}]
