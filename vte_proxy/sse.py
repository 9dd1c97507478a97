"""Server-sent events: splitting, the cheap per-event rewrite, and stream <-> JSON conversion.

The pass-through path (:class:`StreamWatcher`) never decodes an event unless it must: the
``model`` field is rewritten by replacing bytes, and only events that carry usage (or a model
name it does not recognise) are parsed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from vte_proxy.errors import GatewayError, UpstreamError

DONE = b"data: [DONE]"


def event(obj: Any) -> bytes:
    """One SSE data event (without the blank line that ends it)."""
    return b"data: " + orjson.dumps(obj)


def error_event(err: GatewayError) -> bytes:
    return b"data: " + err.json()


# An upstream event larger than this is refused (502 protocol): nothing legitimate comes close,
# and the gateway must not buffer without bound while it waits for an event's end.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class EventSplitter:
    """Incremental SSE framing. Every line ending (CRLF, LF, CR) becomes LF; a blank line ends an
    event. The buffer is scanned from where the last scan stopped, so a large event costs time
    proportional to its size, never to its size times the number of reads (``scanned`` counts
    the bytes searched, for the tests)."""

    __slots__ = ("_buf", "_cr", "_scan_from", "max_event", "scanned")

    def __init__(self, max_event: int = MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()
        self._scan_from = 0
        self._cr = False  # the last read ended in CR: a LF starting the next one is its CRLF's
        self.max_event = max_event
        self.scanned = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events that ``chunk`` completed (an incomplete last one stays buffered)."""
        buf = self._buf
        buf += self._normalize(chunk)
        self.scanned += len(buf) - self._scan_from
        events: list[bytes] = []
        start = 0
        end = buf.find(b"\n\n", self._scan_from)
        while end != -1:
            self._check(end - start)
            if end > start:
                ev = bytes(buf[start:end])
                events.append(ev.lstrip(b"\n") if ev[:1] == b"\n" else ev)
            start = end + 2
            end = buf.find(b"\n\n", start)
        del buf[:start]  # cheap: bytearray drops a prefix without moving the rest
        self._check(len(buf))
        self._scan_from = max(len(buf) - 1, 0)  # a LF at the end may be the first half of a blank line
        return [ev for ev in events if ev]

    def _normalize(self, chunk: bytes) -> bytes:
        if self._cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._cr = chunk[-1:] == b"\r"
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return chunk

    def _check(self, size: int) -> None:
        if size > self.max_event:
            raise UpstreamError(502, f"the provider sent a stream event over {self.max_event} bytes", "protocol")


async def split_events(chunks: AsyncIterator[bytes], max_event: int = MAX_EVENT_BYTES) -> AsyncIterator[list[bytes]]:
    """Split a byte stream into SSE events, yielded as the batch of complete events each read
    brought (so the client side can send them in one write); an incomplete last event is
    dropped; an event over ``max_event`` bytes is an UpstreamError (502 ``protocol``)."""
    splitter = EventSplitter(max_event)
    async for chunk in chunks:
        batch = splitter.feed(chunk)
        if batch:
            yield batch


def data_of(ev: bytes) -> bytes | None:
    """The data payload of an event (the common single-line case without a copy of lines)."""
    if ev.startswith(b"data:") and b"\n" not in ev:
        return ev[5:].lstrip(b" ")
    for line in ev.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:].lstrip(b" ")
    return None


def _replace_data(ev: bytes, payload: bytes) -> bytes:
    if ev.startswith(b"data:") and b"\n" not in ev:
        return b"data: " + payload
    lines = [b"data: " + payload if ln.startswith(b"data:") else ln for ln in ev.split(b"\n")]
    return b"\n".join(lines)


def usage_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Usage from a chat/completions chunk or answer, or from a Responses API event/answer."""
    usage = obj.get("usage")
    if isinstance(usage, dict):
        return usage
    response = obj.get("response")
    if isinstance(response, dict) and isinstance(response.get("usage"), dict):
        return response["usage"]  # type: ignore[no-any-return]
    return None


def set_model(obj: dict[str, Any], exposed: str) -> None:
    if "model" in obj:
        obj["model"] = exposed
    response = obj.get("response")
    if isinstance(response, dict) and "model" in response:
        response["model"] = exposed


class StreamWatcher:
    """Looks at each upstream event once: rewrites ``model``, notes usage and the finish,
    and drops the usage-only chunk the gateway asked for when the client did not."""

    __slots__ = ("_exposed", "_needles", "_rewrite", "done", "finished", "keep_usage", "usage")

    def __init__(self, exposed: str, upstream_model: str, keep_usage: bool, rewrite: bool = True) -> None:
        self._exposed = exposed
        self._rewrite = rewrite and exposed != upstream_model
        self._needles: list[tuple[bytes, bytes]] = []
        if self._rewrite:
            self._learn(upstream_model)
        self.keep_usage = keep_usage
        self.usage: dict[str, Any] | None = None
        self.finished = False
        self.done = False

    def _learn(self, upstream_model: str) -> None:
        old, new = orjson.dumps(upstream_model), orjson.dumps(self._exposed)
        self._needles += [(b'"model":' + old, b'"model":' + new), (b'"model": ' + old, b'"model": ' + new)]

    def process(self, ev: bytes) -> bytes | None:
        """The event to send on, or None to drop it."""
        if ev == DONE:
            self.done = True
            return ev
        # Plain `in` tests, not any(<generator>): this runs for every event of every stream.
        if not self.finished and (b'"finish_reason":"' in ev or b'"finish_reason": "' in ev
                                  or b"response.completed" in ev or b"response.incomplete" in ev):
            self.finished = True
        decode = b'"usage":{' in ev or b'"usage": {' in ev
        if self._rewrite:
            hit = False
            for old, new in self._needles:
                if old in ev:
                    ev = ev.replace(old, new)
                    hit = True
            if not hit and b'"model"' in ev:
                decode = True
        if not decode:
            return ev
        payload = data_of(ev)
        if payload is None:
            return ev
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return ev
        if not isinstance(obj, dict):
            return ev
        usage = usage_of(obj)
        if usage is not None:
            self.usage = usage
            if not self.keep_usage and obj.get("choices") == [] and obj.get("object") != "response":
                return None
        if self._rewrite:
            upstream = obj.get("model") or (obj.get("response") or {}).get("model")
            if isinstance(upstream, str) and upstream != self._exposed:
                self._learn(upstream)  # the upstream names the model its own way: match it cheaply next time
            set_model(obj, self._exposed)
            return _replace_data(ev, orjson.dumps(obj))
        return ev


class ChatAssembler:
    """Builds one ``chat.completion`` from ``chat.completion.chunk`` objects (force_stream)."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        for k in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if k in chunk and k not in self.head:
                self.head[k] = chunk[k]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for c in chunk.get("choices") or ():
            i = c.get("index", 0)
            choice = self.choices.setdefault(i, {"content": [], "reasoning": [], "tools": {}, "finish": None,
                                                 "role": "assistant", "refusal": []})
            delta = c.get("delta") or {}
            if delta.get("role"):
                choice["role"] = delta["role"]
            if delta.get("content"):
                choice["content"].append(delta["content"])
            if delta.get("reasoning_content"):
                choice["reasoning"].append(delta["reasoning_content"])
            if delta.get("refusal"):
                choice["refusal"].append(delta["refusal"])
            for tc in delta.get("tool_calls") or ():
                slot = choice["tools"].setdefault(tc.get("index", 0), {"id": None, "type": "function",
                                                                       "name": [], "arguments": []})
                if tc.get("id"):
                    slot["id"] = tc["id"]
                if tc.get("type"):
                    slot["type"] = tc["type"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    slot["name"].append(fn["name"])
                if fn.get("arguments"):
                    slot["arguments"].append(fn["arguments"])
            if c.get("finish_reason"):
                choice["finish"] = c["finish_reason"]

    def result(self, exposed: str) -> dict[str, Any]:
        choices = []
        for i in sorted(self.choices):
            c = self.choices[i]
            message: dict[str, Any] = {"role": c["role"], "content": "".join(c["content"]) or None}
            if c["reasoning"]:
                message["reasoning_content"] = "".join(c["reasoning"])
            if c["refusal"]:
                message["refusal"] = "".join(c["refusal"])
            if c["tools"]:
                message["tool_calls"] = [
                    {"id": t["id"], "type": t["type"],
                     "function": {"name": "".join(t["name"]), "arguments": "".join(t["arguments"])}}
                    for _, t in sorted(c["tools"].items())
                ]
            choices.append({"index": i, "message": message, "finish_reason": c["finish"], "logprobs": None})
        out: dict[str, Any] = {"id": self.head.get("id", "chatcmpl-vte"), "object": "chat.completion",
                               "created": self.head.get("created", 0), "model": exposed, "choices": choices}
        for k in ("system_fingerprint", "service_tier"):
            if k in self.head:
                out[k] = self.head[k]
        if self.usage is not None:
            out["usage"] = self.usage
        return out


def synthesize(completion: dict[str, Any], exposed: str, include_usage: bool) -> list[bytes]:
    """A valid chat stream (ending in ``[DONE]``) that rebuilds ``completion`` (force_non_stream)."""
    head = {"id": completion.get("id", "chatcmpl-vte"), "object": "chat.completion.chunk",
            "created": completion.get("created", 0), "model": exposed}
    if completion.get("system_fingerprint"):
        head["system_fingerprint"] = completion["system_fingerprint"]

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return event({**head, "choices": [{"index": index, "delta": delta, "finish_reason": finish}]})

    out: list[bytes] = []
    for choice in completion.get("choices") or ():
        i = choice.get("index", 0)
        msg = choice.get("message") or {}
        out.append(chunk(i, {"role": msg.get("role", "assistant"), "content": ""}))
        if msg.get("reasoning_content"):
            out.append(chunk(i, {"reasoning_content": msg["reasoning_content"]}))
        if msg.get("content"):
            out.append(chunk(i, {"content": msg["content"]}))
        if msg.get("refusal"):
            out.append(chunk(i, {"refusal": msg["refusal"]}))
        for j, tc in enumerate(msg.get("tool_calls") or ()):
            fn = tc.get("function") or {}
            out.append(chunk(i, {"tool_calls": [{"index": j, "id": tc.get("id"), "type": tc.get("type", "function"),
                                                 "function": {"name": fn.get("name", ""), "arguments": ""}}]}))
            if fn.get("arguments"):
                out.append(chunk(i, {"tool_calls": [{"index": j, "function": {"arguments": fn["arguments"]}}]}))
        out.append(chunk(i, {}, choice.get("finish_reason") or "stop"))
    if include_usage and isinstance(completion.get("usage"), dict):
        out.append(event({**head, "choices": [], "usage": completion["usage"]}))
    out.append(DONE)
    return out
