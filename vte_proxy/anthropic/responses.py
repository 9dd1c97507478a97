"""Complete (non-stream) answers both ways: OpenAI chat completion <-> Anthropic message, and usage.

Usage: Anthropic's ``input_tokens`` excludes cached tokens, OpenAI's ``prompt_tokens`` includes
them, so ``prompt_tokens = input + cache_read + cache_creation`` and
``prompt_tokens_details.cached_tokens = cache_read``; and back, ``input_tokens = prompt_tokens -
cached_tokens``, ``cache_read_input_tokens = cached_tokens``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from vte_proxy.anthropic.ids import message_id, tool_use_id, with_signature
from vte_proxy.anthropic.to_chat import as_dict

# OpenAI finish_reason -> Anthropic stop_reason, and back.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
                  "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# --- usage ------------------------------------------------------------------------------------

def usage_to_anthropic(usage: Any) -> dict[str, int]:
    """OpenAI usage -> Anthropic usage."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return {"input_tokens": max(_int(usage.get("prompt_tokens")) - cached, 0), "output_tokens":
            _int(usage.get("completion_tokens")), "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


def usage_to_openai(usage: Any) -> dict[str, Any]:
    """Anthropic usage -> OpenAI usage (cache reads and writes are part of the prompt)."""
    usage = usage if isinstance(usage, dict) else {}
    read = _int(usage.get("cache_read_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + read + _int(usage.get("cache_creation_input_tokens"))
    completion = _int(usage.get("output_tokens"))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": read}}


# --- OpenAI chat completion -> Anthropic message ----------------------------------------------

def parse_arguments(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments string as the ``input`` object (a non-object is wrapped, not lost)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, dict))
    return ""


def _blocks_from_chat(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        blocks.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = _content_text(message.get("content")) or _content_text(message.get("refusal"))
    if text:
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": call.get("id") or tool_use_id(), "name": function.get("name", ""),
                       "input": parse_arguments(function.get("arguments"))})
    return blocks


def chat_to_message(completion: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat completion (first choice) as an Anthropic message answering for ``model``."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    blocks = _blocks_from_chat(as_dict(choice.get("message")))
    reason = STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn")
    if reason == "end_turn" and any(b["type"] == "tool_use" for b in blocks):
        reason = "tool_use"  # some upstreams say "stop" after a tool call
    return {"id": message_id(), "type": "message", "role": "assistant", "model": model, "content": blocks,
            "stop_reason": reason, "stop_sequence": None, "usage": usage_to_anthropic(completion.get("usage"))}


# --- Anthropic message -> OpenAI chat completion ----------------------------------------------

def _tool_calls(blocks: list[Any], signature: str | None) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, dict) and block.get("type") == "tool_use":
            tool_id = with_signature(str(block.get("id", "")), signature if not calls else None)
            calls.append({"id": tool_id, "type": "function", "function": {
                "name": block.get("name", ""), "arguments": orjson.dumps(block.get("input") or {}).decode()}})
    return calls


def chat_message_from_blocks(blocks: list[Any]) -> dict[str, Any]:
    """An assistant chat message from Anthropic content blocks (thinking as ``reasoning_content``)."""
    thinking = [b for b in blocks if isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking")]
    text = "".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict) and b.get("type") == "text")
    signature = next((b.get("signature") for b in thinking if b.get("signature")), None)
    calls = _tool_calls(blocks, signature)
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(str(b.get("thinking", "")) for b in thinking)
        message["thinking_blocks"] = thinking
    return message


def message_to_chat(message: dict[str, Any], model: str, created: int | None = None) -> dict[str, Any]:
    """An Anthropic message as an OpenAI chat completion answering for ``model``."""
    content = message.get("content")
    blocks = content if isinstance(content, list) else []
    reason = message.get("stop_reason")
    return {"id": "chatcmpl-" + str(message.get("id") or message_id()).removeprefix("msg_"),
            "object": "chat.completion", "created": created or int(time.time()), "model": model,
            "choices": [{"index": 0, "message": chat_message_from_blocks(blocks),
                         "finish_reason": FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop",
                         "logprobs": None}],
            "usage": usage_to_openai(message.get("usage"))}
