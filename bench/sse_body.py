"""The fixed bodies the mock upstreams serve: one chat.completion and a 22-event chat stream.

The stream is the same as the shared side-by-side benchmark's: a role chunk, 20 content
chunks, a finish chunk, a usage-only chunk and ``data: [DONE]`` (22 JSON events + DONE).
Run as a script, it prints the SSE body (what nginx serves as a static file).
"""

from __future__ import annotations

import json
import sys
from typing import Any

COMPLETION = (
    b'{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a fixed answer from the '
    b'mock upstream, about thirty tokens long, used to measure gateway overhead."},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}'
)
# The same answer in OpenAI's Responses API (LiteLLM answers /v1/messages through it).
RESPONSE = (
    b'{"id":"resp_mock","object":"response","created_at":1700000000,"status":"completed","model":"gpt-4o-mini",'
    b'"output":[{"type":"message","id":"msg_mock","status":"completed","role":"assistant","content":[{"type":'
    b'"output_text","text":"Hello! This is a fixed answer from the mock upstream, about thirty tokens long, used to '
    b'measure gateway overhead.","annotations":[]}]}],"parallel_tool_calls":true,"tool_choice":"auto","tools":[],'
    b'"usage":{"input_tokens":12,"output_tokens":30,"total_tokens":42,"input_tokens_details":{"cached_tokens":0},'
    b'"output_tokens_details":{"reasoning_tokens":0}}}'
)
MODELS = (
    b'{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1700000000,"owned_by":"mock"},'
    b'{"id":"gpt-4o","object":"model","created":1700000000,"owned_by":"mock"}]}'
)


def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: dict[str, int] | None = None,
          choices: bool = True) -> bytes:
    """One ``data:`` event (with its blank line)."""
    body: dict[str, Any] = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000,
                            "model": "gpt-4o-mini",
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []}
    if usage is not None:
        body["usage"] = usage
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def content_chunk(i: int) -> bytes:
    return chunk({"content": f"tok{i} "})


def stream_head() -> bytes:
    return chunk({"role": "assistant", "content": ""})


def stream_tail(completion_tokens: int = 20) -> bytes:
    """The finish chunk, the usage-only chunk and ``[DONE]``."""
    usage = {"prompt_tokens": 12, "completion_tokens": completion_tokens, "total_tokens": 12 + completion_tokens}
    return chunk({}, finish="stop") + chunk(None, usage=usage, choices=False) + b"data: [DONE]\n\n"


def sse_body(content_events: int = 20) -> bytes:
    """The whole stream: role chunk, ``content_events`` content chunks, finish, usage, [DONE]."""
    return stream_head() + b"".join(content_chunk(i) for i in range(content_events)) + stream_tail(content_events)


if __name__ == "__main__":
    sys.stdout.buffer.write(sse_body())
