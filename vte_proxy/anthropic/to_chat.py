"""Anthropic Messages request -> OpenAI chat request (``/v1/messages`` on a non-Anthropic provider).

Pure translation; the input is never mutated. What has no OpenAI counterpart is dropped, never
forwarded (strict upstreams answer 400 to unknown fields): ``cache_control`` (with its ``ttl``),
``context_management``, ``top_k``, server tools (``web_search_*``, ...), ``citations``.

Mapping, field by field:

- ``system`` (string or text blocks) -> one leading ``system`` message; ``role: "system"`` turns
  inside ``messages`` stay ``system`` messages where they are.
- user blocks: ``text`` -> text part; ``image`` base64 -> ``data:`` URL, url -> URL;
  ``document`` -> its text (text/content sources), a ``file`` part (base64 PDF) or, for
  a URL, a text line naming it (no OpenAI-compatible upstream fetches documents);
  ``tool_result`` -> a ``tool`` message (text; images in it follow in a user message).
- assistant blocks: ``text`` -> content; ``tool_use`` -> ``tool_calls`` (input -> JSON string);
  ``thinking``/``redacted_thinking`` -> dropped for the upstream (OpenAI-compatible APIs reject
  replayed reasoning) unless ``keep_thinking``: then ``reasoning_content`` plus the exact blocks
  in ``thinking_blocks``, so :func:`~vte_proxy.anthropic.to_messages.chat_to_messages` restores
  them with their signatures.
- ``tools`` -> function tools (``input_schema`` -> ``parameters``, passed intact);
  ``tool_choice`` auto/any/tool/none -> auto/required/{function}/none;
  ``disable_parallel_tool_use`` -> ``parallel_tool_calls: false``.
- ``thinking`` enabled (an explicit budget: the caller asked for reasoning) -> ``reasoning_effort``
  by budget; ``adaptive`` ("the model decides") and ``output_config.effort`` -> nothing, the
  model's own default. Claude Code sends adaptive thinking with effort ``high`` on every request,
  and OpenAI refuses ``reasoning_effort`` for its non-reasoning models (gpt-4o, gpt-4.1): mapping
  it would break Claude Code there, while reasoning models reason by default anyway.
- ``output_config.format`` (structured output, ``json_schema``) -> ``response_format``.
- ``metadata.user_id`` -> ``user`` (as it is up to 64 characters, else ``sha256:`` and 32 hex of
  its hash: stable per user, within OpenAI's length limit); ``stop_sequences`` -> ``stop``;
  ``max_tokens``, ``temperature``, ``top_p``, ``stream`` as they are.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from vte_proxy.errors import GatewayError


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (client JSON is untrusted)."""
    return value if isinstance(value, dict) else {}

_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}
_USER_MAX = 64


def invalid(message: str) -> GatewayError:
    """The 400 for a body that is not a valid Messages request."""
    return GatewayError(400, message, code="invalid_request_error")


def effort_for_budget(budget: Any) -> str:
    """``thinking.budget_tokens`` -> a ``reasoning_effort`` of comparable depth."""
    if not isinstance(budget, int) or budget < 4096:
        return "low"
    return "medium" if budget < 16384 else "high"


def user_field(user_id: str) -> str:
    """``metadata.user_id`` as OpenAI's ``user``: as it is when short enough, else a stable hash."""
    if len(user_id) <= _USER_MAX:
        return user_id
    return "sha256:" + hashlib.sha256(user_id.encode()).hexdigest()[:32]


def text_of_system(system: Any) -> str:
    """The ``system`` field (a string or text blocks) as one string."""
    if system is None or isinstance(system, str):
        return system or ""
    if not isinstance(system, list):
        raise invalid("system: must be a string or a list of text blocks")
    return "\n\n".join(b["text"] for b in system if isinstance(b, dict) and isinstance(b.get("text"), str))


# --- content blocks ---------------------------------------------------------------------------

def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif kind == "url" and isinstance(source, dict) and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise invalid(f"{where}.source: only base64 and url image sources can be translated")
    return {"type": "image_url", "image_url": {"url": url}}


def _document_part(block: dict[str, Any]) -> dict[str, Any]:
    source = as_dict(block.get("source"))
    kind = source.get("type")
    title = block.get("title") if isinstance(block.get("title"), str) else None
    if kind == "text":
        text = str(source.get("data", ""))
    elif kind == "content":
        text = _plain_text(source.get("content"))
    elif kind == "base64" and source.get("media_type") == "application/pdf":
        return {"type": "file", "file": {"filename": title or "document.pdf",
                                         "file_data": f"data:application/pdf;base64,{source.get('data', '')}"}}
    else:  # a URL or a file id: nothing an OpenAI-compatible upstream could open
        text = f"[document not included: {source.get('url') or kind or 'unknown source'}]"
    return {"type": "text", "text": f"{title}\n\n{text}" if title else text}


def _plain_text(content: Any) -> str:
    """A tool result's or document's content (string or blocks) as text; images are left out."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return "" if content is None else orjson.dumps(content).decode()
    return "\n".join(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))


def _user_parts(block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    kind = block.get("type")
    if kind == "text":
        return [{"type": "text", "text": str(block.get("text", ""))}]
    if kind == "image":
        return [_image_part(block, where)]
    if kind == "document":
        return [_document_part(block)]
    if kind in ("thinking", "redacted_thinking", "search_result", "container_upload"):
        return []
    raise invalid(f"{where}: content block type {kind!r} cannot be translated for this provider")


def _tool_message(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A ``tool_result`` block -> a ``tool`` message, plus the images it held (for a user turn)."""
    content = block.get("content")
    images = [_image_part(b, "tool_result") for b in content or () if isinstance(b, dict) and b.get("type") == "image"]
    text = _plain_text(content)
    if block.get("is_error") and not text.startswith("Error"):
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}, images


# --- turns ------------------------------------------------------------------------------------

def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise invalid(f"{where}.content: must be a string or a list of content blocks")
    if not all(isinstance(b, dict) for b in content):
        raise invalid(f"{where}.content: every block must be an object")
    return content


def _user_turn(content: Any, where: str) -> list[dict[str, Any]]:
    """A user turn: its tool results first (as ``tool`` messages), then one user message."""
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(_blocks(content, where)):
        if block.get("type") == "tool_result":
            message, images = _tool_message(block)
            out.append(message)
            parts += images
        else:
            parts += _user_parts(block, f"{where}.content[{i}]")
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "\n".join(p["text"] for p in parts) if only_text else parts})
    return out


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    arguments = orjson.dumps(block.get("input") if block.get("input") is not None else {}).decode()
    return {"id": str(block.get("id", "")), "type": "function",
            "function": {"name": str(block.get("name", "")), "arguments": arguments}}


def _assistant_turn(content: Any, where: str, keep_thinking: bool) -> dict[str, Any]:
    blocks = _blocks(content, where)
    texts = [str(b.get("text", "")) for b in blocks if b.get("type") == "text"]
    calls = [_tool_call(b) for b in blocks if b.get("type") in ("tool_use", "server_tool_use")]
    thinking = [{k: v for k, v in b.items() if k != "cache_control"} for b in blocks
                if b.get("type") in ("thinking", "redacted_thinking")]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if keep_thinking and thinking:
        message["reasoning_content"] = "".join(str(b.get("thinking", "")) for b in thinking)
        message["thinking_blocks"] = thinking
    return message


def _messages(body: dict[str, Any], keep_thinking: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = text_of_system(body.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    turns = body.get("messages")
    if not isinstance(turns, list):
        raise invalid("messages: must be a list")
    for i, turn in enumerate(turns):
        out += _turn(as_dict(turn), f"messages[{i}]", keep_thinking)
    return out


def _turn(turn: dict[str, Any], where: str, keep_thinking: bool) -> list[dict[str, Any]]:
    """One Messages turn as chat messages (a user turn may become tool messages plus a user one)."""
    role = turn.get("role")
    if role == "user":
        return _user_turn(turn.get("content"), where)
    if role == "assistant":
        return [_assistant_turn(turn.get("content"), where, keep_thinking)]
    if role == "system":
        return [{"role": "system", "content": text_of_system(turn.get("content"))}]
    raise invalid(f"{where}.role: must be 'user' or 'assistant'")


# --- tools and parameters ---------------------------------------------------------------------

def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise invalid("tools: must be a list")
    out = []
    for tool in tools:
        # Server tools (web search, code execution, ...) run at Anthropic only: left out.
        if not isinstance(tool, dict) or "input_schema" not in tool or tool.get("type") not in (None, "custom"):
            continue
        function: dict[str, Any] = {"name": tool.get("name"), "parameters": tool["input_schema"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, out: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in _TOOL_CHOICE:
        out["tool_choice"] = _TOOL_CHOICE[kind]
    if choice.get("disable_parallel_tool_use") and out.get("tools"):
        out["parallel_tool_calls"] = False


def _effort(body: dict[str, Any]) -> str | None:
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        return effort_for_budget(thinking.get("budget_tokens"))
    return None


def _sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    for name in ("max_tokens", "temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    if body.get("stream"):
        out["stream"] = True


def _parameters(body: dict[str, Any], out: dict[str, Any]) -> None:
    _sampling(body, out)
    user_id = as_dict(body.get("metadata")).get("user_id")
    if isinstance(user_id, str) and user_id:
        out["user"] = user_field(user_id)
    effort = _effort(body)
    if effort:
        out["reasoning_effort"] = effort
    output_format = as_dict(as_dict(body.get("output_config")).get("format"))
    if output_format.get("type") == "json_schema" and isinstance(output_format.get("schema"), dict):
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "output", "schema": output_format["schema"]}}


def messages_to_chat(body: dict[str, Any], *, keep_thinking: bool = False) -> dict[str, Any]:
    """A Messages request body as an OpenAI chat/completions body (``model`` kept as given).

    ``keep_thinking`` carries assistant thinking blocks (signatures included) in the chat form,
    for a canonical body that may become a Messages body again; upstreams never get them.
    """
    if not isinstance(body.get("max_tokens"), int) or isinstance(body.get("max_tokens"), bool):
        raise invalid("max_tokens: Field required (an integer)")
    out: dict[str, Any] = {"model": body.get("model"), "messages": _messages(body, keep_thinking)}
    if body.get("tools"):
        tools = _tools(body["tools"])
        if tools:
            out["tools"] = tools
            _tool_choice(body.get("tool_choice"), out)  # OpenAI refuses tool_choice without tools
    _parameters(body, out)
    return out
