"""``type: echo``: a built-in provider that answers with the last user message.

No account and no network: for demos, smoke tests and client integration tests. It speaks
every endpoint (chat, completions, embeddings, responses), streams word by word and reports
usage (words counted as tokens), exactly like a real OpenAI-compatible upstream would.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from typing import Any

from vte_proxy.errors import bad_request
from vte_proxy.providers.base import Answer, Call, EventBatches, JsonAnswer, Provider, StreamAnswer
from vte_proxy.sse import DONE, event

_ids = itertools.count(1)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _array(body: dict[str, Any], field: str) -> list[Any]:
    value = body.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request(f"'{field}' must be an array")
    return value


def _prompt(call: Call) -> tuple[str, int]:
    """The text to echo and the prompt's token count."""
    body = call.body
    if call.endpoint == "chat/completions":
        messages = _array(body, "messages")
        if not all(isinstance(m, dict) for m in messages):
            raise bad_request("'messages' must be an array of message objects")
        users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
        return (users[-1] if users else ""), sum(_words(_text(m.get("content"))) for m in messages)
    if call.endpoint == "responses":
        inp = body.get("input")
        if isinstance(inp, list):
            users = [_text(m.get("content")) for m in inp if isinstance(m, dict) and m.get("role", "user") == "user"]
            text = users[-1] if users else ""
            return text, sum(_words(_text(m.get("content"))) for m in inp if isinstance(m, dict))
        text = inp if isinstance(inp, str) else ""
        return text, _words(text)
    prompt = body.get("prompt")
    text = prompt if isinstance(prompt, str) else " ".join(p for p in _array(body, "prompt") if isinstance(p, str))
    return text, _words(text)


def _vector(text: str, dims: int = 16) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(b - 127.5) / 127.5 for b in digest[:dims]]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 6) for v in raw]


class EchoProvider(Provider):
    async def send(self, call: Call) -> Answer:
        self.check_endpoint(call.endpoint)
        model = call.target.upstream_model
        n = next(_ids)
        created = int(time.time())
        if call.endpoint == "embeddings":
            return JsonAnswer(self._embeddings(call, model))
        text, prompt_tokens = _prompt(call)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": _words(text),
                 "total_tokens": prompt_tokens + _words(text)}
        if call.endpoint == "responses":
            return self._responses(call, model, text, usage, n, created)
        rid = f"chatcmpl-echo-{n}" if call.endpoint == "chat/completions" else f"cmpl-echo-{n}"
        if not call.stream:
            if call.endpoint == "chat/completions":
                choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop", "logprobs": None}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
                obj = "text_completion"
            return JsonAnswer({"id": rid, "object": obj, "created": created, "model": model,
                               "choices": [choice], "usage": usage})
        return StreamAnswer(self._stream(call.endpoint, rid, created, model, text, usage))

    async def _stream(self, endpoint: str, rid: str, created: int, model: str, text: str,
                      usage: dict[str, int]) -> EventBatches:
        chat = endpoint == "chat/completions"
        head = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
                "model": model}

        def chunk(piece: str | None, finish: str | None = None, role: bool = False) -> bytes:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else (
                    {"content": piece} if piece is not None else {})
                return event({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            return event({**head, "choices": [{"index": 0, "text": piece or "", "finish_reason": finish}]})

        out = [chunk(None, role=True)] if chat else []
        words = text.split(" ")
        out += [chunk(word if i == len(words) - 1 else word + " ") for i, word in enumerate(words)]
        out += [chunk(None, "stop"), event({**head, "choices": [], "usage": usage}), DONE]
        yield out  # no upstream, nothing to wait for: one batch

    def _embeddings(self, call: Call, model: str) -> dict[str, Any]:
        inp = call.body.get("input")
        items = [inp] if isinstance(inp, str) else [str(i) for i in _array(call.body, "input")]
        tokens = sum(_words(i) for i in items)
        return {"object": "list", "model": model,
                "data": [{"object": "embedding", "index": i, "embedding": _vector(t)} for i, t in enumerate(items)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def _responses(self, call: Call, model: str, text: str, usage: dict[str, int], n: int,
                   created: int) -> Answer:
        resp_usage = {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
                      "total_tokens": usage["total_tokens"]}
        msg_id = f"msg_echo_{n}"
        done = {"id": f"resp_echo_{n}", "object": "response", "created_at": created, "status": "completed",
                "model": model, "usage": resp_usage,
                "output": [{"type": "message", "id": msg_id, "status": "completed", "role": "assistant",
                            "content": [{"type": "output_text", "text": text, "annotations": []}]}]}
        if not call.stream:
            return JsonAnswer(done)

        async def events() -> EventBatches:
            started = {**done, "status": "in_progress", "output": [], "usage": None}
            seq = itertools.count()
            out = [b"event: response.created\n" + event({"type": "response.created", "sequence_number": next(seq),
                                                         "response": started})]
            out += [b"event: response.output_text.delta\n" + event(
                {"type": "response.output_text.delta", "sequence_number": next(seq), "item_id": msg_id,
                 "output_index": 0, "content_index": 0, "delta": word + " "}) for word in text.split(" ")]
            out.append(b"event: response.completed\n" + event({"type": "response.completed",
                                                               "sequence_number": next(seq), "response": done}))
            yield out

        return StreamAnswer(events())
