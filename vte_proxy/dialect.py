"""Ingress dialects: how a client's request body is read and how errors are written back to it.

A :class:`Dialect` is chosen by the endpoint (OpenAI's paths today; Anthropic Messages plugs in
here with its own parse and error shapes, see docs/architecture.md). The exchange is the only
caller of ``error_body`` and ``error_event``: it is the one place where an exception becomes
bytes for the client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from vte_proxy.anthropic.errors import error_body as anthropic_error_body
from vte_proxy.anthropic.errors import to_anthropic
from vte_proxy.errors import GatewayError, UpstreamError, bad_request

MAX_MODEL_NAME = 256
# Nesting levels a request may have. orjson parses 1024 but writes only 254, and a provider
# wraps the body a few levels deeper: what the gateway cannot forward is refused here (400),
# never found out while forwarding (500). Real requests (JSON Schemas included) stay far below.
MAX_DEPTH = 128


@dataclass(frozen=True, slots=True)
class Dialect:
    """What a client dialect needs from the gateway: parse its body, shape its errors."""

    name: str
    parse: Callable[[bytes], dict[str, Any]]
    error_body: Callable[[GatewayError], bytes]      # the JSON error answer, before any byte was sent
    error_event: Callable[[GatewayError], bytes]     # the SSE event that ends a stream with an error


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The client's JSON body as a dict; 400 otherwise."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("the request body is not valid JSON (UTF-8)", "invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", "invalid_json")
    # Only a body with that many brackets can be that deep: the count is C speed, the walk is rare.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and too_deep(body):
        raise bad_request(f"the request body is nested deeper than {MAX_DEPTH} levels", "too_deep")
    return body


def too_deep(obj: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``obj`` nests lists and objects more than ``limit`` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack += [(c, depth + 1) for c in children if isinstance(c, dict | list)]
    return False


def parse_openai(raw: bytes) -> dict[str, Any]:
    """An OpenAI request body: a JSON object with a string ``model``; 400 otherwise."""
    body = parse_json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string", "invalid_model")
    if len(model) > MAX_MODEL_NAME:
        raise bad_request("'model' is too long", "invalid_model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "invalid_stream")
    return body


def _openai_error_body(err: GatewayError) -> bytes:
    return err.json()  # an upstream's own error body passes through (UpstreamError.json)


def _openai_error_event(err: GatewayError) -> bytes:
    return b"data: " + err.json()


OPENAI = Dialect("openai", parse_openai, _openai_error_body, _openai_error_event)


def parse_anthropic(raw: bytes) -> dict[str, Any]:
    """An Anthropic Messages (or count_tokens) body: a JSON object with a string ``model`` and a
    ``messages`` list; 400 otherwise. The rest is checked by Anthropic itself (native calls)
    or by the translation (:func:`vte_proxy.anthropic.messages_to_chat`)."""
    body = parse_openai(raw)
    if not isinstance(body.get("messages"), list):
        raise bad_request("messages: Field required (a list)", "invalid_request_error")
    return body


def _anthropic_error_body(err: GatewayError) -> bytes:
    """``{"type": "error", "error": {"type", "message"}}``; an upstream's own error body (OpenAI,
    Gemini or Anthropic shaped) is translated, its message kept."""
    if isinstance(err, UpstreamError) and err.upstream_body is not None:
        return orjson.dumps(to_anthropic(err.status, err.upstream_body))
    return orjson.dumps(anthropic_error_body(err.status, err.message))


def _anthropic_error_event(err: GatewayError) -> bytes:
    return b"event: error\ndata: " + _anthropic_error_body(err)


ANTHROPIC = Dialect("anthropic", parse_anthropic, _anthropic_error_body, _anthropic_error_event)


def dialect_for_path(path: str) -> Dialect:
    """The dialect errors on ``path`` are written in: Anthropic's on ``/v1/messages...``."""
    return ANTHROPIC if path.startswith("/v1/messages") else OPENAI
