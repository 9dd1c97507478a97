"""Which call a provider gets for a request in the Anthropic dialect.

``anthropic`` providers speak Messages: the call goes as it is (native pass-through). Every
other provider type gets the canonical form, an OpenAI chat call built by
:func:`~vte_proxy.anthropic.messages_to_chat` (``cache_control``, betas and Anthropic-only
fields dropped, never forwarded), and its chat answer is turned back into a Messages answer by
:mod:`vte_proxy.anthropic.shaping`. ``count_tokens`` is passed to Anthropic upstreams and
answered here for the others, with an offline estimate (:func:`~vte_proxy.anthropic.count_tokens`).
"""

from __future__ import annotations

import asyncio

from vte_proxy.anthropic import count_tokens, messages_to_chat
from vte_proxy.providers.base import Call, JsonAnswer

NATIVE_TYPES = ("anthropic",)
COUNT_TOKENS = "messages/count_tokens"


def is_native(provider_type: str) -> bool:
    """Whether a provider of this type takes Messages bodies as they are."""
    return provider_type in NATIVE_TYPES


async def prepare(call: Call, provider_type: str) -> Call | JsonAnswer:
    """The call to send for an Anthropic-dialect ``call``, or the answer when no call is needed.

    The estimate runs in a worker thread: the first one loads the vocabulary (about 0.7 s), and
    a Claude Code sized body takes tens of milliseconds to encode; the event loop goes on."""
    if call.dialect != "anthropic" or is_native(provider_type):
        return call
    if call.endpoint == COUNT_TOKENS:
        return JsonAnswer({"input_tokens": await asyncio.to_thread(count_tokens, call.body)})
    headers = {k: v for k, v in call.headers.items() if not k.lower().startswith("anthropic-")}
    return Call("chat/completions", messages_to_chat(call.body), call.target, call.stream, headers, "openai")


def is_native_answer(plan_endpoint: str, provider_type: str) -> bool:
    """Whether the answer to an Anthropic-dialect call is already in Messages terms."""
    return plan_endpoint == COUNT_TOKENS or is_native(provider_type)
