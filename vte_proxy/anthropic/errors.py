"""Error bodies between Anthropic's shape and OpenAI's, both ways.

Anthropic: ``{"type": "error", "error": {"type", "message"}}``; the ``anthropic`` SDKs pick their
exception class from the HTTP status and read only this shape. OpenAI: ``{"error": {"message",
"type", "code"}}``. Gemini: ``{"error": {"code", "message", "status"}}``.
"""

from __future__ import annotations

from typing import Any

import orjson

# Status -> Anthropic's error type (its documented list; 529 is its "overloaded").
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
    504: "timeout_error", 529: "overloaded_error",
}
_OPENAI_TYPES = {"billing_error": "insufficient_quota", "overloaded_error": "service_unavailable"}


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(status: int, message: str, type_: str | None = None) -> dict[str, Any]:
    """The Anthropic-shaped error object."""
    return {"type": "error", "error": {"type": type_ or error_type(status), "message": message}}


def _decode(body: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _message_of(obj: dict[str, Any] | None, raw: bytes) -> str:
    err = obj.get("error") if obj else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return str(err["message"])
    if isinstance(err, str):
        return err
    if obj and isinstance(obj.get("message"), str):
        return str(obj["message"])
    return raw.decode("utf-8", "replace").strip()[:2000] or "upstream error"


def to_anthropic(status: int, body: bytes) -> dict[str, Any]:
    """Any upstream error body (OpenAI, Gemini, Anthropic, text) as Anthropic's shape.

    The type follows the status, not the upstream's vocabulary (the SDKs key on the status).
    An Anthropic-shaped body is kept as it is.
    """
    obj = _decode(body)
    if obj and obj.get("type") == "error" and isinstance(obj.get("error"), dict):
        return obj
    return error_body(status, _message_of(obj, body))


def to_openai(status: int, body: bytes) -> dict[str, Any]:
    """An Anthropic (or any) upstream error body as OpenAI's shape; ``code`` keeps Anthropic's type."""
    obj = _decode(body)
    err = obj.get("error") if obj else None
    kind = str(err["type"]) if isinstance(err, dict) and isinstance(err.get("type"), str) else error_type(status)
    return {"error": {"message": _message_of(obj, body), "type": _OPENAI_TYPES.get(kind, kind), "code": kind}}


def openai_to_anthropic(body: dict[str, Any], status: int) -> dict[str, Any]:
    """A gateway's own OpenAI-shaped error object in Anthropic's shape (the message kept)."""
    err = body.get("error")
    message = err.get("message") if isinstance(err, dict) else None
    return error_body(status, message if isinstance(message, str) else "error")
