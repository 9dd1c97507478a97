"""OpenAI ``/v1/chat/completions`` request body -> Vertex AI ``generateContent`` request body.

Pure translation, no I/O; the input body is never mutated. Anything that cannot be
translated faithfully raises :class:`~vte_proxy.errors.GatewayError` (400) naming the field.
See :mod:`vte_proxy.providers.vertex_mapping` for the tool-call id / ``thoughtSignature`` scheme;
JSON schemas (tool parameters, ``response_format``) are cleaned by :mod:`vte_proxy.providers.vertex_schema`.

This module puts the body together; the parts live in :mod:`~vte_proxy.providers.vertex_messages`
(messages, per role), :mod:`~vte_proxy.providers.vertex_tools` (``tools``, ``tool_choice``),
:mod:`~vte_proxy.providers.vertex_generation` (``generationConfig``) and
:mod:`~vte_proxy.providers.vertex_call_ids` (tool-call ids carrying thought signatures).
"""

from __future__ import annotations

from typing import Any

from vte_proxy.providers.vertex_generation import generation_config
from vte_proxy.providers.vertex_messages import convert_messages
from vte_proxy.providers.vertex_schema import invalid as _bad  # the 400 for any untranslatable field
from vte_proxy.providers.vertex_tools import convert_tool_choice, convert_tools


def _reject_unsupported(body: dict[str, Any]) -> None:
    if "functions" in body or "function_call" in body:
        raise _bad("'functions' / 'function_call' are not supported: use 'tools' / 'tool_choice'")
    if body.get("logprobs") not in (None, False) or body.get("top_logprobs") not in (None, 0):
        raise _bad("'logprobs' is not supported by this provider")
    modalities = body.get("modalities")
    if body.get("audio") is not None or (isinstance(modalities, list) and set(modalities) - {"text"}):
        raise _bad("audio output ('audio', 'modalities') is not supported by this provider")
    if body.get("logit_bias"):
        raise _bad("'logit_bias' is not supported by this provider")
    if body.get("web_search_options") is not None:
        raise _bad("'web_search_options' is not supported by this provider")


def chat_to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI /v1/chat/completions request body -> Vertex generateContent request body."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    _reject_unsupported(body)
    system, contents = convert_messages(body.get("messages"))
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = convert_tools(body.get("tools"))
    if tools:
        out["tools"] = tools
    declared = [d["name"] for t in tools for d in t["functionDeclarations"]]
    tool_config = convert_tool_choice(body.get("tool_choice"), declared)
    if tool_config:
        out["toolConfig"] = tool_config
    config = generation_config(body)
    if config:
        out["generationConfig"] = config
    return out
