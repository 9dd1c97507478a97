"""The GenAI semantic-convention attributes, read from bodies and streams.

Operation and provider names, the ``gen_ai.request.*`` parameters of a client body, usage
counts and finish reasons of an answer (OpenAI chat, completions, Responses API, Anthropic
Messages), and :class:`StreamFacts` (the response model, id and finish reasons of a stream).
Imports OpenTelemetry: used only by the modules of :mod:`vte_proxy.tracing_sdk`.
"""

from __future__ import annotations

import functools
import logging
from typing import Any
from urllib.parse import urlsplit

import orjson
from opentelemetry.util.types import AttributeValue

from vte_proxy.sse import data_of
from vte_proxy.tracing_content import StreamContent

log = logging.getLogger("vte_proxy.tracing")

# gen_ai.operation.name by gateway endpoint (semantic-convention values where one exists).
OPERATIONS = {"chat/completions": "chat", "chat/completions/ws": "chat", "completions": "text_completion",
              "embeddings": "embeddings", "responses": "chat", "messages": "chat",
              "messages/count_tokens": "count_tokens"}
# gen_ai.provider.name by provider type (the conventions' well-known values where one exists).
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "vertex-express": "gcp.vertex_ai",
                  "echo": "vte_proxy.echo"}


@functools.lru_cache(maxsize=256)
def server_of(base_url: str) -> tuple[str, int]:
    """server.address and server.port of an upstream's base URL (never its path or credentials)."""
    parts = urlsplit(base_url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def request_attributes(body: dict[str, Any]) -> dict[str, AttributeValue]:
    """gen_ai.request.* from a client body (OpenAI chat/completions/responses or Anthropic)."""
    out: dict[str, AttributeValue] = {}
    for field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if (n := _count(body.get(field))) is not None:
            out["gen_ai.request.max_tokens"] = n
            break
    for field, name in (("temperature", "gen_ai.request.temperature"), ("top_p", "gen_ai.request.top_p")):
        if (x := _number(body.get(field))) is not None:
            out[name] = float(x)
    out["gen_ai.request.stream"] = body.get("stream") is True
    return out


def usage_counts(usage: Any) -> tuple[int | None, int | None]:
    """(input, output) tokens from an OpenAI (chat or Responses) or Anthropic usage object."""
    if not isinstance(usage, dict):
        return None, None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    return (prompt if prompt is not None else _count(usage.get("input_tokens")),
            completion if completion is not None else _count(usage.get("output_tokens")))


def finish_reasons(body: dict[str, Any]) -> list[str]:
    """Finish reasons of an answer: choices[].finish_reason, or Anthropic's stop_reason."""
    choices = body.get("choices")
    reasons = [c["finish_reason"] for c in choices if isinstance(c, dict)
               and isinstance(c.get("finish_reason"), str)] if isinstance(choices, list) else []
    if not reasons and isinstance(body.get("stop_reason"), str):
        reasons.append(body["stop_reason"])
    return reasons

# Events worth decoding for their facts once the model is known: those with a finish.
_FINISH = (b'"finish_reason":"', b'"finish_reason": "', b'"stop_reason":"', b'"stop_reason": "',
           b'"response.completed"', b'"response.incomplete"')


class StreamFacts:
    """The response model, id and finish reasons of a stream (OpenAI chat or completions
    chunks, Responses API events, Anthropic Messages events), read from the few events that
    carry them; with a :class:`StreamContent`, every event feeds it."""

    __slots__ = ("changed", "content", "model", "reasons", "response_id")

    def __init__(self, content: StreamContent | None) -> None:
        self.content = content
        self.changed = False  # a model, id or finish reason was learned since the last look
        self.model: str | None = None
        self.response_id: str | None = None
        self.reasons: list[str] = []

    def see(self, ev: bytes) -> None:
        if self.content is None and self.model is not None and not any(m in ev for m in _FINISH):
            return
        payload = data_of(ev)
        if payload is None or payload == b"[DONE]":
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if isinstance(obj, dict):
            try:
                self._read(obj)
            except (AttributeError, TypeError, ValueError):  # an upstream event of an odd shape: not ours to fail
                log.debug("tracing: could not read a stream event", exc_info=True)

    def _read(self, obj: dict[str, Any]) -> None:
        inner = obj.get("response") or obj.get("message")
        head = inner if isinstance(inner, dict) else obj
        if self.model is None and isinstance(head.get("model"), str):
            self.model = head["model"]
            self.response_id = head["id"] if isinstance(head.get("id"), str) else None
            self.changed = True
        known = len(self.reasons)
        self._reasons(obj, head)
        self.changed = self.changed or len(self.reasons) > known
        if self.content is not None:
            self.content.add(obj)

    def _reasons(self, obj: dict[str, Any], head: dict[str, Any]) -> None:
        self.reasons += finish_reasons(obj)
        delta = obj.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):  # Anthropic message_delta
            self.reasons.append(delta["stop_reason"])
        if head.get("status") == "incomplete" and isinstance(head.get("incomplete_details"), dict):
            reason = head["incomplete_details"].get("reason")  # Responses API
            if isinstance(reason, str):
                self.reasons.append(reason)
