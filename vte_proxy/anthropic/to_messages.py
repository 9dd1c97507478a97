"""OpenAI chat request -> Anthropic Messages request (OpenAI clients on an ``anthropic`` provider).

Pure translation; the input is never mutated. Mapping:

- ``system``/``developer`` messages -> ``system`` text blocks (Messages has one system prompt);
- user parts: text -> text block; ``image_url`` ``data:`` URL -> base64 image source, other
  URLs -> url source; ``file`` with a PDF ``file_data`` -> a base64 ``document`` block;
- assistant: content -> text block; ``tool_calls`` -> ``tool_use`` blocks (arguments string ->
  input object); thinking first, from ``thinking_blocks`` (exact, as this gateway answers them)
  or from ``reasoning_content`` plus the signature carried in the first tool call's id
  (:mod:`~vte_proxy.anthropic.ids`); reasoning without a signature is dropped (Claude refuses
  unsigned thinking);
- ``tool`` messages -> ``tool_result`` blocks of one user turn; consecutive turns of one role merge;
- ``max_tokens``/``max_completion_tokens`` -> ``max_tokens`` (:data:`DEFAULT_MAX_TOKENS` when
  absent: Anthropic requires it); ``stop`` -> ``stop_sequences``; ``temperature`` capped at 1;
  ``top_p``, ``top_k``; ``user`` -> ``metadata.user_id``;
- ``tools`` -> ``{name, description, input_schema}``; ``tool_choice`` auto/required/none/
  {function} -> auto/any/none/{tool}; ``parallel_tool_calls: false`` ->
  ``disable_parallel_tool_use``;
- ``reasoning_effort`` -> ``thinking`` enabled with a budget (``none`` -> nothing), and
  ``max_tokens`` raised above the budget when needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vte_proxy.anthropic.ids import split_signature
from vte_proxy.anthropic.responses import parse_arguments
from vte_proxy.anthropic.to_chat import invalid

DEFAULT_MAX_TOKENS = 4096
# reasoning_effort -> thinking.budget_tokens (Anthropic's minimum budget is 1024).
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32000}


# --- content ----------------------------------------------------------------------------------

def _image_block(url: Any, where: str) -> dict[str, Any]:
    if not isinstance(url, str) or not url:
        raise invalid(f"{where}: image_url.url must be a non-empty string")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding.lower() != "base64":
            raise invalid(f"{where}: data: URLs must be base64-encoded")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type or "image/png", "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _file_block(file: Any, where: str) -> dict[str, Any]:
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data.startswith("data:application/pdf;base64,"):
        raise invalid(f"{where}: only PDF files given as file_data (data:application/pdf;base64,...) are supported")
    block = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": data.partition(",")[2]}}
    if isinstance(file, dict) and isinstance(file.get("filename"), str):
        block["title"] = file["filename"]
    return block


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("text", "refusal") and isinstance(part, dict):
        return {"type": "text", "text": str(part.get(kind, ""))}
    if kind == "image_url" and isinstance(part, dict):
        image = part.get("image_url")
        return _image_block(image.get("url") if isinstance(image, dict) else image, where)
    if kind == "file" and isinstance(part, dict):
        return _file_block(part.get("file"), where)
    raise invalid(f"{where}: content part type {kind!r} is not supported by Anthropic providers")


def _content(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise invalid(f"{where}.content: must be a string or a list of content parts")
    blocks = [_part(p, f"{where}.content[{i}]") for i, p in enumerate(content)]
    return [b for b in blocks if b["type"] != "text" or b["text"]]


def _system_text(content: Any, where: str) -> str:
    return "\n".join(b["text"] for b in _content(content, where) if b["type"] == "text")


# --- assistant and tool turns -----------------------------------------------------------------

def _thinking(message: dict[str, Any], signature: str | None) -> list[dict[str, Any]]:
    blocks = message.get("thinking_blocks")
    if isinstance(blocks, list) and blocks:
        return [b for b in blocks if isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking")]
    reasoning = message.get("reasoning_content")
    if signature and isinstance(reasoning, str) and reasoning:
        return [{"type": "thinking", "thinking": reasoning, "signature": signature}]
    return []


def _assistant(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    uses: list[dict[str, Any]] = []
    signature = None
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise invalid(f"{where}.tool_calls: every call needs a function")
        tool_id, sig = split_signature(str(call.get("id", "")))
        signature = signature or sig
        uses.append({"type": "tool_use", "id": tool_id, "name": function.get("name", ""),
                     "input": parse_arguments(function.get("arguments"))})
    content = message.get("content")
    text = [{"type": "text", "text": content}] if isinstance(content, str) and content else _content(
        content if isinstance(content, list) else None, where)
    return _thinking(message, signature) + text + uses


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    content = message.get("content")
    blocks = _content(content, where) if isinstance(content, list) else None
    tool_id, _ = split_signature(str(message.get("tool_call_id", "")))
    return {"type": "tool_result", "tool_use_id": tool_id,
            "content": blocks if blocks is not None else str(content or "")}


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add blocks as a turn of ``role``, merged into the last turn when it has the same role."""
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"] += blocks
    else:
        turns.append({"role": role, "content": blocks})


def _turns(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, turns) of a chat ``messages`` list."""
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: must be a non-empty list")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        message = message if isinstance(message, dict) else {}
        where, role = f"messages[{i}]", message.get("role")
        if role in ("system", "developer"):
            text = _system_text(message.get("content"), where)
            system += [{"type": "text", "text": text}] if text else []
        elif role in _TURNS:
            turn_role, make = _TURNS[role]
            _append(turns, turn_role, make(message, where))
        else:
            raise invalid(f"{where}.role: {role!r} is not supported by Anthropic providers")
    return system, [t for t in turns if t["content"]]


# Chat role -> (Messages role, the blocks of that message).
_TURNS: dict[str, tuple[str, Callable[[dict[str, Any], str], list[dict[str, Any]]]]] = {
    "user": ("user", lambda message, where: _content(message.get("content"), where)),
    "assistant": ("assistant", _assistant),
    "tool": ("user", lambda message, where: [_tool_result(message, where)]),
}


# --- tools and parameters ---------------------------------------------------------------------

def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(f"tools[{i}]: only function tools with a name are supported by Anthropic providers")
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        entry = {"name": function["name"], "input_schema": schema}
        if function.get("description"):
            entry["description"] = function["description"]
        out.append(entry)
    return out


def _tool_choice(body: dict[str, Any]) -> dict[str, Any] | None:
    choice = body.get("tool_choice")
    out: dict[str, Any] | None = None
    if choice in ("auto", "none"):
        out = {"type": choice}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    if body.get("parallel_tool_calls") is False and (out is None or out["type"] != "none"):
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def _sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        out["temperature"] = min(float(temperature), 1.0)
    for name in ("top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}


def _reasoning(body: dict[str, Any], out: dict[str, Any]) -> None:
    budget = THINKING_BUDGETS.get(body.get("reasoning_effort") or "")
    if budget is None:
        return
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    out["max_tokens"] = max(out["max_tokens"], budget + DEFAULT_MAX_TOKENS)
    out.pop("temperature", None)  # extended thinking requires the default temperature and no top_k
    out.pop("top_k", None)


def chat_to_messages(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat/completions body as a Messages body (``model`` kept as given)."""
    if isinstance(body.get("n"), int) and body["n"] > 1:
        raise invalid("n: Anthropic providers answer one choice only")
    system, turns = _turns(body.get("messages"))
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    out: dict[str, Any] = {"model": body.get("model"), "max_tokens": max_tokens, "messages": turns}
    if system:
        out["system"] = system
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        choice = _tool_choice(body)
        if choice:
            out["tool_choice"] = choice
    _sampling(body, out)
    _reasoning(body, out)
    if body.get("stream"):
        out["stream"] = True
    return out


def _unsigned(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "thinking" and not block.get("signature")


def without_unsigned_thinking(messages: Any) -> Any:
    """``messages`` without thinking blocks that have no signature (``messages`` itself when there
    are none). Such blocks are what a translated provider's reasoning becomes (it has no
    signature to give); a client that replays them to Claude would get a 400."""
    if not isinstance(messages, list) or not any(
            isinstance(m, dict) and isinstance(m.get("content"), list) and any(map(_unsigned, m["content"]))
            for m in messages):
        return messages
    out = []
    for m in messages:
        if isinstance(m, dict) and isinstance(m.get("content"), list) and any(map(_unsigned, m["content"])):
            content = [b for b in m["content"] if not _unsigned(b)]
            if not content:
                continue  # a turn of nothing but such thinking: Anthropic merges the turns around it
            m = {**m, "content": content}
        out.append(m)
    return out
