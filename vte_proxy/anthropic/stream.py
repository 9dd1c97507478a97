"""Streams both ways: OpenAI chat chunks <-> Anthropic's named SSE events.

:class:`ChatToMessages` turns the chunks of an OpenAI-compatible upstream into the exact event
sequence Anthropic's clients expect::

    message_start{message, usage}          once, first
    content_block_start{index, block}      text, thinking (from reasoning_content) or tool_use
    content_block_delta{index, delta}      text_delta | thinking_delta | input_json_delta
    content_block_stop{index}              before the next block starts, and at the end
    message_delta{delta{stop_reason}, usage}   cumulative usage
    message_stop

An upstream stream that ends before its finish_reason gets an ``error`` event instead of the
last two (:func:`error_event`), so clients see a failure and never a short answer.

:class:`MessagesToChat` does the reverse for OpenAI clients of an ``anthropic`` provider: chat
chunks, the finish chunk, then one usage chunk (cached tokens included).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from vte_proxy.anthropic.errors import error_body
from vte_proxy.anthropic.ids import message_id, tool_use_id, with_signature
from vte_proxy.anthropic.responses import FINISH_REASONS, STOP_REASONS, usage_to_anthropic, usage_to_openai
from vte_proxy.anthropic.to_chat import as_dict

Event = tuple[str, dict[str, Any]]


def sse(name: str, data: dict[str, Any]) -> bytes:
    """One named SSE event, without the blank line that ends it."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data)


def error_event(status: int, message: str) -> bytes:
    """The mid-stream ``error`` event for a failure of ``status``."""
    return sse("error", error_body(status, message))


class ChatToMessages:
    """OpenAI chat chunks -> Anthropic events. Feed each chunk, then call :meth:`finish`."""

    def __init__(self, model: str, input_tokens: int = 0) -> None:
        self.model = model
        self.finished = False                 # a finish_reason arrived
        self._input_tokens = input_tokens     # an estimate until the upstream reports usage
        self._started = False
        self._index = -1
        self._open: str | None = None          # "text" | "thinking" | "tool"
        self._tool_index: Any = None           # the OpenAI index of the open tool call
        self._tool_id: str | None = None
        self._reason = "end_turn"
        self._usage: dict[str, int] | None = None

    def _start(self) -> list[Event]:
        self._started = True
        usage = {"input_tokens": self._input_tokens, "output_tokens": 0,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        message: dict[str, Any] = {"id": message_id(), "type": "message", "role": "assistant", "model": self.model,
                                   "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
        return [("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[Event]:
        events = self._close()
        self._index += 1
        self._open = kind
        return [*events, ("content_block_start", {"type": "content_block_start", "index": self._index,
                                                  "content_block": block})]

    def _delta(self, delta: dict[str, Any]) -> Event:
        return "content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}

    def _text(self, kind: str, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open != kind:
            events = self._open_block(kind, {"type": "text", "text": ""} if kind == "text"
                                      else {"type": "thinking", "thinking": "", "signature": ""})
        key = "text" if kind == "text" else "thinking"
        return [*events, self._delta({"type": f"{key}_delta", key: text})]

    def _tool(self, call: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        function = as_dict(call.get("function"))
        index, call_id = call.get("index", 0), call.get("id")
        # A new call: another index, or (upstreams that number every call 0) another id.
        if self._open != "tool" or index != self._tool_index or (call_id and call_id != self._tool_id):
            self._tool_index, self._tool_id = index, call_id or tool_use_id()
            name = function.get("name") or ""
            events = self._open_block("tool", {"type": "tool_use", "id": self._tool_id, "name": name, "input": {}})
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            events.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return events

    def _choice(self, choice: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        delta = as_dict(choice.get("delta"))
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events += self._text("thinking", reasoning)
        text = delta.get("content") or delta.get("refusal")  # a refusal is the answer's text
        if isinstance(text, str) and text:
            events += self._text("text", text)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                events += self._tool(call)
        if choice.get("finish_reason"):
            self.finished = True
            self._reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return events

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """The events one upstream chunk brings (only the first choice is translated)."""
        events = [] if self._started else self._start()
        if isinstance(chunk.get("usage"), dict):
            self._usage = usage_to_anthropic(chunk["usage"])
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict) and choices[0].get("index", 0) == 0:
            events += self._choice(choices[0])
        return events

    def finish(self) -> list[Event]:
        """The closing events: the open block's stop, message_delta with usage, message_stop."""
        events = [] if self._started else self._start()
        events += self._close()
        if self._reason == "end_turn" and self._index >= 0 and self._tool_index is not None:
            self._reason = "tool_use"  # some upstreams say "stop" after a tool call
        usage = self._usage or {"input_tokens": self._input_tokens, "output_tokens": 0,
                                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        events.append(("message_delta", {"type": "message_delta", "usage": usage,
                                         "delta": {"stop_reason": self._reason, "stop_sequence": None}}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    @property
    def usage(self) -> dict[str, int] | None:
        """The upstream's usage in Anthropic's terms, once it arrived."""
        return self._usage


class MessagesToChat:
    """Anthropic events -> OpenAI chat chunks. Feed each (event name, data); then :meth:`usage_chunk`."""

    def __init__(self, model: str, chunk_id: str | None = None, created: int | None = None) -> None:
        self.model = model
        self.id = chunk_id or "chatcmpl-" + message_id().removeprefix("msg_")
        self.created = created or int(time.time())
        self.finished = False      # message_delta with a stop_reason arrived
        self.stopped = False       # message_stop arrived
        self.error: dict[str, Any] | None = None
        self._usage: dict[str, Any] = {}
        self._signature: str | None = None
        self._tools = -1
        self._block = ""

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    def _block_start(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        block = as_dict(data.get("content_block"))
        self._block = str(block.get("type", ""))
        if self._block == "tool_use":
            self._tools += 1
            tool_id = with_signature(str(block.get("id", "")), self._signature if self._tools == 0 else None)
            call = {"index": self._tools, "id": tool_id, "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": ""}}
            return [self._chunk({"tool_calls": [call]})]
        if self._block == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _block_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        delta = as_dict(data.get("delta"))
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": delta.get("thinking", "")})]
        if kind == "signature_delta":
            self._signature = (self._signature or "") + str(delta.get("signature", ""))
        elif kind == "input_json_delta" and delta.get("partial_json"):
            call = {"index": self._tools, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _message_start(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        self._usage.update(as_dict(as_dict(data.get("message")).get("usage")))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _message_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        usage = data.get("usage")
        if isinstance(usage, dict):  # cumulative: later figures replace earlier ones
            self._usage.update({k: v for k, v in usage.items() if v is not None})
        reason = (data.get("delta") or {}).get("stop_reason")
        if not reason:
            return []
        self.finished = True
        return [self._chunk({}, FINISH_REASONS.get(reason, "stop"))]

    def _message_stop(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        self.stopped = True
        return []

    def _error(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        self.error = as_dict(data.get("error")) or {"message": "stream error"}
        return []

    def feed(self, name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The chat chunks one Anthropic event brings (the kind is ``data.type``, else ``name``)."""
        handler = self._HANDLERS.get(str(data.get("type") or name))
        return handler(self, data) if handler else []

    _HANDLERS: dict[str, Callable[[MessagesToChat, dict[str, Any]], list[dict[str, Any]]]] = {
        "message_start": _message_start, "content_block_start": _block_start, "content_block_delta": _block_delta,
        "message_delta": _message_delta, "message_stop": _message_stop, "error": _error}

    def usage_chunk(self) -> dict[str, Any]:
        """The final usage-only chunk (``choices: []``), cached tokens included."""
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": usage_to_openai(self._usage)}

    @property
    def usage(self) -> dict[str, Any]:
        """The cumulative Anthropic usage seen so far."""
        return dict(self._usage)


# --- whole messages <-> event sequences (stream policy conversions on native answers) ---------

_EMPTY_BLOCKS: dict[str, dict[str, Any]] = {"text": {"type": "text", "text": ""},
                                            "thinking": {"type": "thinking", "thinking": "", "signature": ""}}


def _block_events(index: int, block: dict[str, Any]) -> list[Event]:
    kind = block.get("type")
    start = _EMPTY_BLOCKS.get(str(kind)) or ({**block, "input": {}} if kind == "tool_use" else block)
    deltas: list[dict[str, Any]] = []
    if kind == "text":
        deltas = [{"type": "text_delta", "text": block.get("text", "")}]
    elif kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": block.get("thinking", "")},
                  {"type": "signature_delta", "signature": block.get("signature", "")}]
    elif kind == "tool_use":
        deltas = [{"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input") or {}).decode()}]
    events: list[Event] = [("content_block_start", {"type": "content_block_start", "index": index,
                                                    "content_block": start})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
    return [*events, ("content_block_stop", {"type": "content_block_stop", "index": index})]


def message_to_events(message: dict[str, Any]) -> list[Event]:
    """The event sequence that streams ``message`` (a complete Messages answer) whole."""
    blocks = message.get("content") if isinstance(message.get("content"), list) else []
    usage = as_dict(message.get("usage"))
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    events: list[Event] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(blocks or ()):
        events += _block_events(index, as_dict(block))
    delta = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    events.append(("message_delta", {"type": "message_delta", "delta": delta,
                                     "usage": {"output_tokens": usage.get("output_tokens", 0)}}))
    return [*events, ("message_stop", {"type": "message_stop"})]


class MessageAssembler:
    """Builds the complete Messages answer from its events (what the SDKs' stream helpers do)."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.stopped = False
        self.error: dict[str, Any] | None = None
        self._json: dict[int, str] = {}

    def _block(self, index: Any) -> dict[str, Any]:
        content = self.message["content"] if self.message else []
        return content[index] if isinstance(index, int) and 0 <= index < len(content) else {}

    def _delta(self, index: Any, delta: dict[str, Any]) -> None:
        block, kind = self._block(index), delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + str(delta.get("text", ""))
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + str(delta.get("thinking", ""))
        elif kind == "signature_delta":
            block["signature"] = block.get("signature", "") + str(delta.get("signature", ""))
        elif kind == "input_json_delta":
            self._json[index] = self._json.get(index, "") + str(delta.get("partial_json", ""))

    def _stop(self, index: Any) -> None:
        if index in self._json:
            block = self._block(index)
            block["input"] = orjson.loads(self._json.pop(index) or "{}")

    def _message_delta(self, data: dict[str, Any]) -> None:
        if self.message is None:
            return
        self.message.update({k: v for k, v in as_dict(data.get("delta")).items() if k in ("stop_reason",
                                                                                            "stop_sequence")})
        usage = {k: v for k, v in as_dict(data.get("usage")).items() if v is not None}
        self.message["usage"] = {**as_dict(self.message.get("usage")), **usage}

    def _start(self, data: dict[str, Any]) -> None:
        self.message = {**as_dict(data.get("message")), "content": []}

    def _block_start(self, data: dict[str, Any]) -> None:
        if self.message is not None:
            self.message["content"].append(dict(as_dict(data.get("content_block"))))

    def _stop_message(self, data: dict[str, Any]) -> None:
        self.stopped = True

    def _error(self, data: dict[str, Any]) -> None:
        self.error = as_dict(data.get("error"))

    def feed(self, data: dict[str, Any]) -> None:
        """One event's data object (an invalid tool input JSON raises orjson.JSONDecodeError)."""
        handler = self._HANDLERS.get(str(data.get("type")))
        if handler is not None:
            handler(self, data)

    _HANDLERS: dict[str, Callable[[MessageAssembler, dict[str, Any]], None]] = {
        "message_start": _start, "content_block_start": _block_start,
        "content_block_delta": lambda self, data: self._delta(data.get("index"), as_dict(data.get("delta"))),
        "content_block_stop": lambda self, data: self._stop(data.get("index")),
        "message_delta": lambda self, data: self._message_delta(data),
        "message_stop": _stop_message, "error": _error}
