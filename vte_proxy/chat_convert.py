"""The chat stream <-> JSON converters: :class:`ChatAssembler` builds one ``chat.completion``
from ``chat.completion.chunk`` events (``force_stream`` for a client that does not stream), and
:func:`synthesize` rebuilds a completion as a valid chat stream (``force_non_stream`` for one
that does). :mod:`vte_proxy.shaping` decides when each is used.
"""

from __future__ import annotations

from typing import Any

import orjson

from vte_proxy.errors import UpstreamError
from vte_proxy.sse import DONE, data_of, event


class ChatAssembler:
    """Builds one ``chat.completion`` from ``chat.completion.chunk`` events (force_stream)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None

    def add_event(self, ev: bytes) -> None:
        """One upstream event; a malformed one, or an error, fails the answer (502)."""
        payload = data_of(ev)
        if payload is None:
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise self._failure("sent an invalid stream event", "protocol") from None
        if not isinstance(chunk, dict):
            return
        if "error" in chunk and "choices" not in chunk:
            raise self._failure("failed mid-stream", "truncated")
        try:
            self.add(chunk)
        except (AttributeError, TypeError):  # a chunk of the wrong shape
            raise self._failure("sent a malformed chunk", "protocol") from None

    def _failure(self, what: str, reason: str) -> UpstreamError:
        return UpstreamError(self.provider, 502, f"provider {self.provider!r} {what}", reason)

    def add(self, chunk: dict[str, Any]) -> None:
        for k in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if k in chunk and k not in self.head:
                self.head[k] = chunk[k]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for c in chunk.get("choices") or ():
            self._add_choice(c)

    def _add_choice(self, c: dict[str, Any]) -> None:
        choice = self.choices.setdefault(c.get("index", 0), {"content": [], "reasoning": [], "tools": {},
                                                             "finish": None, "role": "assistant", "refusal": [],
                                                             "annotations": [], "logprobs": None})
        delta = c.get("delta") or {}
        if delta.get("role"):
            choice["role"] = delta["role"]
        for name, key in (("content", "content"), ("reasoning_content", "reasoning"), ("refusal", "refusal"),
                          ("annotations", "annotations")):
            if delta.get(name):
                choice[key] += delta[name] if name == "annotations" else [delta[name]]
        for tc in delta.get("tool_calls") or ():
            _add_tool_call(choice["tools"], tc)
        if isinstance(c.get("logprobs"), dict):
            choice["logprobs"] = _merge_logprobs(choice["logprobs"], c["logprobs"])
        if c.get("finish_reason"):
            choice["finish"] = c["finish_reason"]

    def result(self, exposed: str) -> dict[str, Any]:
        choices = [_assembled_choice(i, self.choices[i]) for i in sorted(self.choices)]
        out: dict[str, Any] = {"id": self.head.get("id", "chatcmpl-vte"), "object": "chat.completion",
                               "created": self.head.get("created", 0), "model": exposed, "choices": choices}
        for k in ("system_fingerprint", "service_tier"):
            if k in self.head:
                out[k] = self.head[k]
        if self.usage is not None:
            out["usage"] = self.usage
        return out


def _add_tool_call(tools: dict[int, dict[str, Any]], tc: dict[str, Any]) -> None:
    slot = tools.setdefault(tc.get("index", 0), {"id": None, "type": "function", "name": [], "arguments": []})
    if tc.get("id"):
        slot["id"] = tc["id"]
    if tc.get("type"):
        slot["type"] = tc["type"]
    fn = tc.get("function") or {}
    if fn.get("name"):
        slot["name"].append(fn["name"])
    if fn.get("arguments"):
        slot["arguments"].append(fn["arguments"])


def _merge_logprobs(into: dict[str, Any] | None, more: dict[str, Any]) -> dict[str, Any]:
    """A choice's logprobs so far with one more chunk's (``content`` and ``refusal`` token lists)."""
    out = dict(into or {})
    for k, v in more.items():
        out[k] = [*(out.get(k) or []), *v] if isinstance(v, list) else out.get(k, v)
    return out


def _assembled_choice(i: int, c: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": c["role"], "content": "".join(c["content"]) or None}
    if c["annotations"]:
        message["annotations"] = c["annotations"]
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
    return {"index": i, "message": message, "finish_reason": c["finish"], "logprobs": c["logprobs"]}


def synthesize(completion: dict[str, Any], exposed: str, include_usage: bool) -> list[bytes]:
    """A valid chat stream (ending in ``[DONE]``) that rebuilds ``completion`` (force_non_stream)."""
    head = {"id": completion.get("id", "chatcmpl-vte"), "object": "chat.completion.chunk",
            "created": completion.get("created", 0), "model": exposed}
    for k in ("system_fingerprint", "service_tier"):
        if completion.get(k):
            head[k] = completion[k]
    out = [event({**head, "choices": [c]}) for choice in completion.get("choices") or ()
           for c in _choice_deltas(choice)]
    if include_usage and isinstance(completion.get("usage"), dict):
        out.append(event({**head, "choices": [], "usage": completion["usage"]}))
    out.append(DONE)
    return out


def _choice_deltas(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream choices that rebuild one completion choice: role, reasoning, content (with
    the choice's logprobs), refusal, annotations, each tool call (name first, then its
    arguments), the finish. The role chunk's content is null for a tool-call-only message, as
    OpenAI streams it."""
    i = choice.get("index", 0)
    msg = choice.get("message") or {}
    tool_only = bool(msg.get("tool_calls")) and not msg.get("content")
    deltas: list[dict[str, Any]] = [{"role": msg.get("role", "assistant"), "content": None if tool_only else ""}]
    deltas += [{name: msg[name]} for name in ("reasoning_content", "content", "refusal", "annotations")
               if msg.get(name)]
    for j, tc in enumerate(msg.get("tool_calls") or ()):
        fn = tc.get("function") or {}
        deltas.append({"tool_calls": [{"index": j, "id": tc.get("id"), "type": tc.get("type", "function"),
                                       "function": {"name": fn.get("name", ""), "arguments": ""}}]})
        if fn.get("arguments"):
            deltas.append({"tool_calls": [{"index": j, "function": {"arguments": fn["arguments"]}}]})
    out = [{"index": i, "delta": d, "finish_reason": None} for d in deltas]
    if choice.get("logprobs"):  # all of them on the content chunk (or the role chunk): the SDKs concatenate
        at = next((n for n, d in enumerate(deltas) if n and "content" in d), 0)
        out[at]["logprobs"] = choice["logprobs"]
    out.append({"index": i, "delta": {}, "finish_reason": choice.get("finish_reason") or "stop"})
    return out
