"""Tool-call ids carrying Gemini thought signatures (the scheme is described in
:mod:`vte_proxy.providers.vertex_mapping`): made for an answer's ``functionCall`` parts, read
back from the assistant ``tool_calls`` of the next request."""

from __future__ import annotations

import re
import secrets
import string

_ALNUM = string.ascii_letters + string.digits
_TS_SEP = "__ts__"
_ID_RE = re.compile(r"call_[A-Za-z0-9]{24}__ts__([A-Za-z0-9_-]+)")
_B64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def new_tool_call_id(thought_signature: str | None = None) -> str:
    """``call_`` + 24 random alphanumerics, plus ``__ts__<base64url signature>`` when given."""
    call_id = "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24))
    if thought_signature and _B64_RE.fullmatch(thought_signature):
        call_id += _TS_SEP + thought_signature.rstrip("=").replace("+", "-").replace("/", "_")
    return call_id


def thought_signature_from_id(call_id: str) -> str | None:
    """The standard-base64 ``thoughtSignature`` encoded in ``call_id`` by :func:`new_tool_call_id`."""
    match = _ID_RE.fullmatch(call_id)
    if match is None:
        return None
    sig = match.group(1).replace("-", "+").replace("_", "/")
    return sig + "=" * (-len(sig) % 4)
