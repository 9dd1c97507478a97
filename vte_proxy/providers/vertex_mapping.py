"""OpenAI chat completions <-> Vertex AI (Gemini) ``generateContent``: the ``vertex-express`` mapping.

Pure translation, no networking. The request side lives in
:mod:`~vte_proxy.providers.vertex_request` (messages, tools and generation config in
:mod:`~vte_proxy.providers.vertex_messages`, :mod:`~vte_proxy.providers.vertex_tools` and
:mod:`~vte_proxy.providers.vertex_generation`; JSON schemas in
:mod:`~vte_proxy.providers.vertex_schema`; the tool-call ids in
:mod:`~vte_proxy.providers.vertex_call_ids`),
the answer side (JSON, SSE stream, usage, errors) in :mod:`~vte_proxy.providers.vertex_response`;
this module is the public face of them all. The provider itself is
:mod:`~vte_proxy.providers.vertex`.

Tool-call ids and Gemini thought signatures
-------------------------------------------
Gemini has no tool-call ids, so every ``functionCall`` part of an answer gets a fresh id
``call_`` + 24 random ASCII letters/digits. Gemini 3 also attaches a ``thoughtSignature``
(standard base64) to function-call parts and refuses the next turn unless it comes back on the
same part. The signature therefore rides inside the id::

    call_<24 alphanumerics>__ts__<signature as base64url, '=' padding stripped>

e.g. ``call_Ab3dEf6hIj9kLm2nOp5qRs8t__ts__CiQBVKh0aOm_-x``. The id only uses ``[A-Za-z0-9_-]``,
so it survives clients and other providers that treat ids as opaque strings (or restrict them to
that alphabet). On the next request, an assistant ``tool_calls`` entry whose id matches exactly
``call_[A-Za-z0-9]{24}__ts__[A-Za-z0-9_-]+`` gets ``thoughtSignature`` put back (``-``/``_`` ->
``+``/``/``, padding restored) on its ``functionCall`` part; any other id (a plain ``call_...``,
an id made by another provider) is just an id, and no signature is sent. Signatures Google puts
on text parts are not carried (Google documents them as optional).
"""

from __future__ import annotations

from vte_proxy.providers.vertex_call_ids import new_tool_call_id, thought_signature_from_id
from vte_proxy.providers.vertex_request import chat_to_gemini
from vte_proxy.providers.vertex_response import (
    GeminiStreamTranslator,
    gemini_error,
    gemini_to_chat,
    gemini_usage,
)
from vte_proxy.providers.vertex_schema import clean_schema

__all__ = [
    "GeminiStreamTranslator",
    "chat_to_gemini",
    "clean_schema",
    "gemini_error",
    "gemini_to_chat",
    "gemini_usage",
    "new_tool_call_id",
    "thought_signature_from_id",
]
