"""System prompt injection (``system_prompt`` globally, per provider and per client key).

Precedence: the most specific one wins, whole: the client key's, else the provider's (of the
target the request is sent to, so a route may inject different prompts into different
providers), else the global one. They are not combined: a key that needs its own wording
states all of it.

``prepend`` puts the text before the client's own system prompt (joined with a blank line
into the first system message, so upstreams that accept only one system message still do);
``replace`` drops the client's system prompt and sends the text instead. The functions are
pure: they return a new body and never change the client's.
"""

from __future__ import annotations

from typing import Any

from vte_proxy.config import SystemPrompt

_SYSTEM_ROLES = ("system", "developer")


def effective(global_: SystemPrompt | None, provider: SystemPrompt | None,
              key: SystemPrompt | None) -> SystemPrompt | None:
    """The system prompt that applies: the key's, else the provider's, else the global one."""
    return key or provider or global_


def _joined(text: str, content: Any) -> Any:
    """``text`` in front of a message's content (a string or a list of content parts)."""
    if isinstance(content, str):
        return f"{text}\n\n{content}" if content else text
    if isinstance(content, list):
        return [{"type": "text", "text": text}, *content]
    return text


def apply_chat(body: dict[str, Any], prompt: SystemPrompt | None) -> dict[str, Any]:
    """An OpenAI chat/completions body with ``prompt`` applied (``body`` itself unchanged)."""
    messages = body.get("messages")
    if prompt is None or not isinstance(messages, list):
        return body
    ours = {"role": "system", "content": prompt.text}
    if prompt.mode == "replace":
        kept = [m for m in messages if not (isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES)]
        return {**body, "messages": [ours, *kept]}
    first = messages[0] if messages else None
    if isinstance(first, dict) and first.get("role") in _SYSTEM_ROLES:
        merged = {**first, "content": _joined(prompt.text, first.get("content"))}
        return {**body, "messages": [merged, *messages[1:]]}
    return {**body, "messages": [ours, *messages]}


def apply_messages(body: dict[str, Any], prompt: SystemPrompt | None) -> dict[str, Any]:
    """An Anthropic Messages body with ``prompt`` applied to its ``system`` field."""
    if prompt is None:
        return body
    system = body.get("system")
    if prompt.mode == "replace" or system is None or system == "" or system == []:
        return {**body, "system": prompt.text}
    if isinstance(system, list):
        return {**body, "system": [{"type": "text", "text": prompt.text}, *system]}
    return {**body, "system": _joined(prompt.text, system)}


def apply(dialect: str, body: dict[str, Any], prompt: SystemPrompt | None) -> dict[str, Any]:
    """``prompt`` applied to a body of ``dialect`` (``openai`` chat or ``anthropic`` Messages)."""
    return apply_messages(body, prompt) if dialect == "anthropic" else apply_chat(body, prompt)
