"""Vertex AI ``generateContent`` answers, SSE events and errors -> OpenAI chat completions.

Pure translation, no I/O. See :mod:`vte_proxy.providers.vertex_mapping` for the scheme that
carries Gemini ``thoughtSignature`` values inside the OpenAI tool-call ids.
"""

from __future__ import annotations

import json
import re
from typing import Any

from vte_proxy.errors import UpstreamError, error_body
from vte_proxy.providers.vertex_call_ids import new_tool_call_id

_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"} | dict.fromkeys(_FILTERED, "content_filter")
_SECRET_RE = re.compile(r"AIza[0-9A-Za-z_-]{20,}|AQ\.[0-9A-Za-z_.-]{20,}|(?<=[?&]key=)[^&\s\"']+")
_MAX_MESSAGE = 2000


def _finish_reason(reason: Any, has_calls: bool) -> str:
    if has_calls:
        return "tool_calls"
    return _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"


def _count(meta: dict[str, Any], key: str) -> int:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def gemini_usage(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """``usageMetadata`` -> OpenAI ``usage`` (completion includes thinking tokens); None if absent."""
    if not isinstance(meta, dict):
        return None
    prompt = _count(meta, "promptTokenCount") + _count(meta, "toolUsePromptTokenCount")
    thoughts = _count(meta, "thoughtsTokenCount")
    completion = _count(meta, "candidatesTokenCount") + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": _count(meta, "totalTokenCount") or prompt + completion,
        "prompt_tokens_details": {"cached_tokens": _count(meta, "cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


class Malformed(Exception):
    """A part of a Gemini answer that is not of the documented shape (its name is the text)."""


def _malformed(what: str) -> Malformed:
    return Malformed(what)


def _protocol_error(provider: str, exc: Malformed) -> UpstreamError:
    return UpstreamError(provider, 502, f"Vertex AI returned a malformed {exc}", "protocol")


def _split(candidate: Any) -> tuple[str, str, list[dict[str, Any]]]:
    """(text, thought text, OpenAI tool calls) of one candidate."""
    if not isinstance(candidate, dict):
        raise _malformed("candidate")
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            continue
        call = part.get("functionCall")
        if isinstance(call, dict):
            name = call.get("name")
            args = call.get("args")
            if not isinstance(name, str) or (args is not None and not isinstance(args, dict)):
                raise _malformed("function call")
            sig = part.get("thoughtSignature")
            calls.append({
                "id": new_tool_call_id(sig if isinstance(sig, str) else None),
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args or {}, separators=(",", ":"),
                                                                   ensure_ascii=False)},
            })
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") is True else text).append(part["text"])
    return "".join(text), "".join(thoughts), calls


def _candidates(resp: dict[str, Any]) -> list[tuple[int, Any]]:
    candidates = resp.get("candidates")
    if candidates is None:
        return []
    if not isinstance(candidates, list):
        raise _malformed("response")
    out = []
    for pos, cand in enumerate(candidates):
        index = cand.get("index") if isinstance(cand, dict) else None
        out.append((index if isinstance(index, int) and not isinstance(index, bool) else pos, cand))
    return out


def _blocked(resp: dict[str, Any]) -> bool:
    feedback = resp.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def gemini_to_chat(resp: dict[str, Any], model: str, response_id: str, created: int, *,
                   provider: str = "vertex-express") -> dict[str, Any]:
    """generateContent response -> OpenAI chat.completion (``model``: the upstream's name;
    ``provider``: whose failure a malformed answer is)."""
    try:
        return _gemini_to_chat(resp, model, response_id, created)
    except Malformed as exc:
        raise _protocol_error(provider, exc) from None


def _gemini_to_chat(resp: dict[str, Any], model: str, response_id: str, created: int) -> dict[str, Any]:
    if not isinstance(resp, dict):
        raise _malformed("response")
    choices: list[dict[str, Any]] = []
    for index, cand in _candidates(resp):
        text, thoughts, calls = _split(cand)
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None,
                                   "refusal": None}
        if thoughts:
            message["reasoning_content"] = thoughts
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": index, "message": message, "logprobs": None,
                        "finish_reason": _finish_reason(cand.get("finishReason"), bool(calls))})
    if not choices:  # a blocked prompt (HTTP 200, promptFeedback.blockReason) has no candidates
        choices.append({"index": 0, "message": {"role": "assistant", "content": "", "refusal": None},
                        "logprobs": None, "finish_reason": "content_filter" if _blocked(resp) else "stop"})
    choices.sort(key=lambda c: c["index"])
    out: dict[str, Any] = {"id": response_id, "object": "chat.completion", "created": created,
                           "model": model, "choices": choices}
    usage = gemini_usage(resp.get("usageMetadata"))
    if usage is not None:
        out["usage"] = usage
    return out


class GeminiStreamTranslator:
    """Turns the decoded JSON events of ``streamGenerateContent?alt=sse`` into OpenAI chunks."""

    def __init__(self, model: str, response_id: str, created: int, *, provider: str = "vertex-express") -> None:
        self.provider = provider
        self.model = model
        self.response_id = response_id
        self.created = created
        self._usage: dict[str, Any] | None = None
        self._started: set[int] = set()        # choices whose role chunk was sent
        self._calls: dict[int, int] = {}       # choice -> tool calls sent so far
        self._done: set[int] = set()           # choices that reached a finishReason

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if index not in self._started:
            self._started.add(index)
            delta = {"role": "assistant", **delta}
        return {"id": self.response_id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """One Gemini SSE event -> OpenAI ``chat.completion.chunk`` dicts (no usage chunk)."""
        try:
            return self._feed(event)
        except Malformed as exc:
            raise _protocol_error(self.provider, exc) from None

    def _feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(event, dict):
            raise _malformed("stream event")
        if isinstance(event.get("error"), dict):
            raise self._stream_error(event)
        if isinstance(event.get("usageMetadata"), dict):
            self._usage = gemini_usage(event["usageMetadata"])
        chunks = [c for index, cand in _candidates(event) for c in self._candidate_chunks(index, cand)]
        if not self._done and _blocked(event) and not _candidates(event):
            self._done.add(0)
            chunks.append(self._chunk(0, {}, "content_filter"))
        return chunks

    def _stream_error(self, event: dict[str, Any]) -> UpstreamError:
        status, body = gemini_error(_status_of(event["error"]), json.dumps(event).encode())
        return UpstreamError(self.provider, status, body["error"]["message"], "status",
                             retryable=status in (429, 503), code=body["error"]["code"],
                             body=json.dumps(body).encode())

    def _candidate_chunks(self, index: int, cand: Any) -> list[dict[str, Any]]:
        """One candidate of an event: its text/thought delta, its tool calls, its finish."""
        text, thoughts, calls = _split(cand)
        delta = {k: v for k, v in (("content", text), ("reasoning_content", thoughts)) if v}
        chunks = [self._chunk(index, delta)] if delta else []
        for call in calls:
            n = self._calls.get(index, 0)
            self._calls[index] = n + 1
            chunks.append(self._chunk(index, {"tool_calls": [{"index": n, **call}]}))
        reason = cand.get("finishReason")
        if reason and index not in self._done:
            self._done.add(index)
            chunks.append(self._chunk(index, {}, _finish_reason(reason, index in self._calls)))
        return chunks

    @property
    def finished(self) -> bool:
        """True once every choice seen has reached a finishReason (or the prompt was blocked)."""
        return bool(self._done) and self._started <= self._done

    @property
    def usage(self) -> dict[str, Any] | None:
        """OpenAI usage from the last ``usageMetadata`` seen (Vertex's is cumulative)."""
        return self._usage

    def usage_chunk(self) -> dict[str, Any] | None:
        if self._usage is None:
            return None
        return {"id": self.response_id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], "usage": self._usage}


def _status_of(error: dict[str, Any]) -> int:
    code = error.get("code")
    return code if isinstance(code, int) and not isinstance(code, bool) and 100 <= code < 600 else 502


def _redact(message: str) -> str:
    return _SECRET_RE.sub("[redacted]", message)[:_MAX_MESSAGE]


def gemini_error(status: int, body: bytes) -> tuple[int, dict[str, Any]]:
    """Google's ``{"error": {"code", "message", "status"}}`` -> (HTTP status, OpenAI error body).

    400/404/413/429/503/504 keep their status; 401/403 (the gateway's key was refused) and other
    5xx become 502, since the client cannot fix them. Unparsable bodies get a generic message.
    """
    try:
        parsed: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if isinstance(parsed, list) and parsed:  # some Google endpoints wrap errors in a list
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    google_status = error.get("status") if isinstance(error, dict) else None
    if status in (400, 404, 408, 413, 429, 503, 504):
        out = 504 if status == 408 else status
    elif status in (401, 403):
        out = 502
        message = f"Vertex AI refused the gateway's credentials (HTTP {status}): {message or 'no detail'}"
    else:
        out = 502 if status >= 500 or status < 400 else 400
    has_message = isinstance(message, str) and message
    text = f"Vertex AI: {message}" if has_message else f"Vertex AI returned HTTP {status}"
    code = google_status.lower() if isinstance(google_status, str) and google_status.isidentifier() else None
    result: dict[str, Any] = error_body(_redact(text), out, code=code or "upstream_error")
    return out, result
