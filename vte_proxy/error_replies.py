"""Custom error replies (``error_replies``): replace the message of matching errors.

A rule matches an error by HTTP ``status`` and/or ``code``; the code is compared with the
gateway's own code (``rate_limited``, ``model_not_found``, ...) and with the ``code`` and
``type`` inside an upstream's error body (``insufficient_quota``, ``rate_limit_error``). The
first matching rule wins. Only the message changes: the status, headers (``Retry-After``),
code and type stay, and the dialect renders the error in its own shape, so an OpenAI client
still gets ``{"error": {...}}`` and an Anthropic client ``{"type": "error", "error": {...}}``,
as a JSON body before the first byte and as an SSE error event after it.

Applied once, at the error boundary (:mod:`vte_proxy.exchange`), to every error a client sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from vte_proxy.config import ErrorReply
from vte_proxy.errors import GatewayError, UpstreamError


def _body_error(raw: bytes | None) -> dict[str, Any] | None:
    """The ``error`` object of an upstream's JSON error body, if it has one."""
    if not raw:
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def error_codes(err: GatewayError) -> set[str]:
    """The codes a rule's ``code`` is compared with: the gateway's and the upstream body's."""
    codes = {err.code} if err.code else set()
    if isinstance(err, UpstreamError):
        inner = _body_error(err.upstream_body) or {}
        codes.update(str(inner[f]) for f in ("code", "type", "status") if isinstance(inner.get(f), str | int))
    return codes


def match(rules: Sequence[ErrorReply], status: int, codes: set[str]) -> ErrorReply | None:
    """The first rule whose status (if given) and code (if given) both match."""
    for rule in rules:
        if rule.status is not None and rule.status != status:
            continue
        if rule.code is not None and rule.code not in codes:
            continue
        return rule
    return None


def _rewritten_body(raw: bytes | None, message: str) -> bytes | None:
    """The upstream's JSON error body with its message replaced; None when it has no error
    object (the dialect then renders the gateway's own shape with the new message)."""
    body = orjson.loads(raw) if _body_error(raw) is not None else None  # type: ignore[arg-type]
    if not isinstance(body, dict):
        return None
    body["error"] = {**body["error"], "message": message}
    return orjson.dumps(body)


def apply(rules: Sequence[ErrorReply], err: GatewayError) -> GatewayError:
    """``err`` with the message of the first matching rule (a copy), or ``err`` itself."""
    if not rules:
        return err
    rule = match(rules, err.status, error_codes(err))
    if rule is None:
        return err
    # A copy (exceptions with their own __init__ do not copy.copy): the original may be shared.
    out = err.__class__.__new__(err.__class__)
    out.__dict__.update(err.__dict__)
    out.message = rule.message
    out.args = (rule.message,)
    if isinstance(out, UpstreamError) and out.upstream_body is not None:
        out.upstream_body = _rewritten_body(out.upstream_body, rule.message)
    return out
