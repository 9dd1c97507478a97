"""Anthropic's Messages API: codecs to and from OpenAI chat (the gateway's canonical form).

The codecs are pure functions of dicts and events, no I/O; one concept per module:

- :mod:`.to_chat`: Messages request -> chat request (``/v1/messages`` on non-Anthropic providers);
- :mod:`.to_messages`: chat request -> Messages request (OpenAI clients on ``anthropic`` providers);
- :mod:`.responses`: complete answers both ways, and usage;
- :mod:`.stream`: streams both ways (named SSE events <-> chat chunks);
- :mod:`.errors`: error bodies both ways;
- :mod:`.ids`: message ids and thinking signatures carried in tool-call ids.

Two modules wire them into the request's walk for the ``/v1/messages`` ingress dialect:
:mod:`.calls` (which call each provider type gets) and :mod:`.shaping` (the answer back in
Anthropic's shape). :func:`count_tokens` answers ``/v1/messages/count_tokens`` for providers
that cannot.
"""

from __future__ import annotations

from typing import Any

from vte_proxy import tokens
from vte_proxy.anthropic.errors import error_body, error_type, to_anthropic, to_openai
from vte_proxy.anthropic.responses import chat_to_message, message_to_chat, usage_to_anthropic, usage_to_openai
from vte_proxy.anthropic.stream import ChatToMessages, MessagesToChat, error_event, sse
from vte_proxy.anthropic.to_chat import messages_to_chat
from vte_proxy.anthropic.to_messages import chat_to_messages


def count_tokens(body: dict[str, Any]) -> int:
    """An offline estimate of a count_tokens (or Messages) body's input tokens: its system
    prompt, messages and tool definitions, counted on their chat translation."""
    chat = messages_to_chat({**body, "max_tokens": 1}, keep_thinking=True)
    return tokens.count_chat(chat["messages"], chat.get("tools"))


__all__ = [
    "ChatToMessages",
    "MessagesToChat",
    "chat_to_message",
    "chat_to_messages",
    "count_tokens",
    "error_body",
    "error_event",
    "error_type",
    "message_to_chat",
    "messages_to_chat",
    "sse",
    "to_anthropic",
    "to_openai",
    "usage_to_anthropic",
    "usage_to_openai",
]
