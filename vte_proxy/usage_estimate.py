"""Usage for answers whose upstream reported none: prompt and completion tokens estimated offline.

The count is :func:`vte_proxy.tokens.count_text` (cl100k BPE, offline) when that module is
present, else a plain estimate (a token per short run of letters or digits, or per other
character). Estimates are marked: accounting counts the answer in ``vte_usage_missing_total``
(the upstream reported none) and ``vte_usage_estimated_total``, and its tokens in
``vte_tokens_total`` so budgets and dashboards still see them.

Only the text is counted: the request's messages (or prompt, input, system) and the answer's
content; framing, images and tools are not. A stream's answer is estimated from the events
the client got, of which at most :data:`KEEP_BYTES` are kept; the rest is extrapolated by size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from vte_proxy.sse import data_of

KEEP_BYTES = 32 * 1024  # of a stream's events, per request, kept for the estimate
_PIECE = re.compile(r"[^\W\d_]{1,6}|\d{1,3}|[^\s\w]|_", re.UNICODE)


def _plain_count(text: str) -> int:
    return len(_PIECE.findall(text))


def _counter() -> Callable[[str], int]:
    try:
        from vte_proxy.tokens import count_text  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return _plain_count
    return count_text  # type: ignore[no-any-return,unused-ignore]


count_text: Callable[[str], int] = _counter()


def _texts(value: Any) -> Iterator[str]:
    """Every string of a content value: a string, content parts, or Anthropic blocks."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for part in value:
            if isinstance(part, str):
                yield part
            elif isinstance(part, dict):
                yield from _texts(part.get("text") or part.get("content"))


def prompt_text(body: dict[str, Any]) -> Iterator[str]:
    """The text of a request: chat messages, a completion prompt, Responses input and
    instructions, an Anthropic system prompt and messages."""
    for field in ("system", "instructions", "prompt", "input"):
        yield from _texts(body.get(field))
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            yield from _texts(message.get("content"))


def answer_text(obj: Any) -> Iterator[str]:
    """The generated text of an answer, chunk or event of any supported shape."""
    if not isinstance(obj, dict):
        return
    for choice in obj.get("choices") or ():
        if isinstance(choice, dict):
            for part in (choice.get("message"), choice.get("delta")):
                if isinstance(part, dict):
                    yield from _texts(part.get("content"))
                    yield from _calls(part.get("tool_calls"))
            yield from _texts(choice.get("text"))
    yield from _texts(obj.get("content"))  # Anthropic message
    for item in obj.get("output") or ():  # Responses answer
        if isinstance(item, dict):
            yield from _texts(item.get("content"))
    delta = obj.get("delta")
    if isinstance(delta, str):  # Responses text delta
        yield delta
    elif isinstance(delta, dict):  # Anthropic content_block_delta
        yield from _texts(delta.get("text") or delta.get("partial_json"))


def _calls(calls: Any) -> Iterator[str]:
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            yield from _texts(function.get("name"))
            yield from _texts(function.get("arguments"))


def _count(texts: Iterable[str]) -> int:
    return sum(count_text(t) for t in texts if t)


def from_json(request: dict[str, Any], answer: bytes) -> dict[str, int]:
    """Usage of a JSON answer."""
    try:
        obj = orjson.loads(answer)
    except orjson.JSONDecodeError:
        obj = None
    return _usage(_count(prompt_text(request)), _count(answer_text(obj)))


def from_events(request: dict[str, Any], kept: Iterable[bytes], kept_bytes: int, total_bytes: int) -> dict[str, int]:
    """Usage of a stream from the events kept (``kept_bytes`` of ``total_bytes`` sent)."""
    completion = 0
    for ev in kept:
        payload = data_of(ev)
        if payload and payload[:1] == b"{":
            try:
                completion += _count(answer_text(orjson.loads(payload)))
            except orjson.JSONDecodeError:
                continue
    if kept_bytes and total_bytes > kept_bytes:
        completion = math.ceil(completion * total_bytes / kept_bytes)
    return _usage(_count(prompt_text(request)), completion)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
