"""Ids: Anthropic message ids, and thinking signatures carried inside OpenAI tool-call ids.

Claude refuses a tool-use continuation with extended thinking unless the assistant turn's
thinking block comes back with its ``signature``. OpenAI clients keep ``tool_calls[].id`` (they
must, to answer the call) but drop unknown fields, so, as the Vertex provider does with Gemini's
``thoughtSignature``, the signature rides in the id of the turn's first tool call::

    toolu_01AbC...__thsig__<signature as base64url, '=' padding stripped>

The id only uses ``[A-Za-z0-9_-]``. On the way back the suffix is split off again (for the
``tool_use`` block and for every ``tool_result`` that names it); the thinking text itself comes
back as the assistant message's ``reasoning_content`` (or, exactly, as ``thinking_blocks``).
"""

from __future__ import annotations

import re
import secrets

_SEP = "__thsig__"
_SIG_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def tool_use_id() -> str:
    return "toolu_" + secrets.token_hex(12)


def with_signature(tool_id: str, signature: str | None) -> str:
    """``tool_id`` carrying ``signature`` (a standard-base64 string); unchanged without one."""
    if not signature or not _SIG_RE.fullmatch(signature):
        return tool_id
    return tool_id + _SEP + signature.rstrip("=").replace("+", "-").replace("/", "_")


def split_signature(tool_id: str) -> tuple[str, str | None]:
    """(the Anthropic tool id, the signature it carried or None)."""
    base, sep, tail = tool_id.partition(_SEP)
    if not sep or not tail:
        return tool_id, None
    sig = tail.replace("-", "+").replace("_", "/")
    return base, sig + "=" * (-len(sig) % 4)
