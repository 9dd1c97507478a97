"""``type: echo``: a built-in provider that answers with the last user message.

No account and no network: for demos, smoke tests and client integration tests. It speaks
every endpoint (chat, completions, embeddings, responses), streams word by word and reports
usage (words counted as tokens), exactly like a real OpenAI-compatible upstream would: its
Responses stream is OpenAI's full event sequence, so the SDKs' ``responses.stream()`` helpers
accept it.

It echoes at most :data:`MAX_ECHO_CHARS` characters (a longer answer is cut the way
``max_tokens`` cuts one: ``finish_reason: length``, a Responses status ``incomplete``), and
builds its stream lazily, :data:`BATCH` events at a time: the demo model is reachable with the
public demo key, and one event per word of a 1 MiB prompt would be ~90 MB of output.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import Iterable, Iterator
from typing import Any

from vte_proxy.errors import bad_request
from vte_proxy.providers.base import Answer, Call, EventBatches, JsonAnswer, Provider, StreamAnswer
from vte_proxy.sse import DONE, event, named_event

_ids = itertools.count(1)

MAX_ECHO_CHARS = 16 * 1024
BATCH = 64


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


def _capped(text: str) -> tuple[str, bool]:
    """The text echo answers with, and whether it was cut."""
    return (text[:MAX_ECHO_CHARS], True) if len(text) > MAX_ECHO_CHARS else (text, False)


def _pieces(text: str) -> Iterator[str]:
    """The stream deltas: one word each, with the space that follows it (none after the last)."""
    words = text.split(" ")
    last = len(words) - 1
    for i, word in enumerate(words):
        yield word if i == last else word + " "


async def _batched(events: Iterable[bytes]) -> EventBatches:
    """``events`` in batches of BATCH, each built only when the previous one was taken."""
    batch: list[bytes] = []
    for ev in events:
        batch.append(ev)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


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
        text, cut = _capped(text)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": _words(text),
                 "total_tokens": prompt_tokens + _words(text)}
        if call.endpoint == "responses":
            return self._responses(call, model, text, usage, n, created, cut)
        rid = f"chatcmpl-echo-{n}" if call.endpoint == "chat/completions" else f"cmpl-echo-{n}"
        finish = "length" if cut else "stop"
        if not call.stream:
            if call.endpoint == "chat/completions":
                choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": finish, "logprobs": None}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
                obj = "text_completion"
            return JsonAnswer({"id": rid, "object": obj, "created": created, "model": model,
                               "choices": [choice], "usage": usage})
        head = {"id": rid, "object": "chat.completion.chunk" if call.endpoint == "chat/completions"
                else "text_completion", "created": created, "model": model}
        return StreamAnswer(_batched(_stream_events(head, text, finish, usage)))

    def _embeddings(self, call: Call, model: str) -> dict[str, Any]:
        inp = call.body.get("input")
        items = [inp] if isinstance(inp, str) else [str(i) for i in _array(call.body, "input")]
        tokens = sum(_words(i) for i in items)
        return {"object": "list", "model": model,
                "data": [{"object": "embedding", "index": i, "embedding": _vector(t)} for i, t in enumerate(items)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def _responses(self, call: Call, model: str, text: str, usage: dict[str, int], n: int,
                   created: int, cut: bool) -> Answer:
        resp_usage = {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
                      "total_tokens": usage["total_tokens"]}
        msg_id = f"msg_echo_{n}"
        done = {"id": f"resp_echo_{n}", "object": "response", "created_at": created,
                "status": "incomplete" if cut else "completed", "model": model, "usage": resp_usage,
                "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
                "error": None, "instructions": None, "metadata": {}, "parallel_tool_calls": True,
                "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": [],
                "output": [{"type": "message", "id": msg_id, "status": "incomplete" if cut else "completed",
                            "role": "assistant",
                            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}]}
        if not call.stream:
            return JsonAnswer(done)
        return StreamAnswer(_batched(_response_events(done, text)))


def _stream_events(head: dict[str, Any], text: str, finish: str, usage: dict[str, int]) -> Iterator[bytes]:
    """A chat.completion.chunk (or text_completion) stream: role, one delta per word, finish, usage."""
    chat = head["object"] == "chat.completion.chunk"

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta} if chat else {"index": 0, "text": delta.get("content") or ""}
        return event({**head, "choices": [{**choice, "finish_reason": finish_reason}]})

    if chat:
        yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(text):
        yield chunk({"content": piece})
    yield chunk({}, finish)
    yield event({**head, "choices": [], "usage": usage})
    yield DONE


def _response_events(done: dict[str, Any], text: str) -> Iterator[bytes]:
    """OpenAI's Responses stream for one text message, event for event."""
    seq = itertools.count()
    item = done["output"][0]

    def ev(kind: str, **fields: Any) -> bytes:
        return named_event(kind, {"type": kind, "sequence_number": next(seq), **fields})

    started = {**done, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    yield ev("response.created", response=started)
    yield ev("response.in_progress", response=started)
    yield ev("response.output_item.added", output_index=0,
             item={**item, "status": "in_progress", "content": []})
    at = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    yield ev("response.content_part.added", **at, part=part)
    for piece in _pieces(text):
        yield ev("response.output_text.delta", **at, delta=piece, logprobs=[])
    yield ev("response.output_text.done", **at, text=text, logprobs=[])
    yield ev("response.content_part.done", **at, part={**part, "text": text})
    yield ev("response.output_item.done", output_index=0, item=item)
    yield ev("response.incomplete" if done["status"] == "incomplete" else "response.completed", response=done)
