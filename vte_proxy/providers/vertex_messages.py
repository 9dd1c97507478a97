"""OpenAI chat ``messages`` -> Gemini ``systemInstruction`` parts and ``contents``.

One handler per role (system, user, assistant, tool) and per user content part (text,
image, audio, file); consecutive turns of one role are merged, tool results must answer the
calls before them. Anything that cannot be translated faithfully raises a 400 naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vte_proxy.providers.vertex_call_ids import thought_signature_from_id
from vte_proxy.providers.vertex_schema import invalid as _bad  # the 400 for any untranslatable field

_MIME_BY_EXT = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
    "webp": "image/webp", "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf",
    "txt": "text/plain", "mp3": "audio/mp3", "wav": "audio/wav", "flac": "audio/flac",
    "ogg": "audio/ogg", "aac": "audio/aac", "m4a": "audio/m4a", "mp4": "video/mp4",
    "mov": "video/mov", "webm": "video/webm", "mpeg": "video/mpeg",
}
_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3", "flac": "audio/flac", "ogg": "audio/ogg",
               "aac": "audio/aac", "aiff": "audio/aiff", "m4a": "audio/m4a", "pcm16": "audio/pcm"}


def _text_of(content: Any, where: str, allowed: tuple[str, ...] = ("text",)) -> list[str]:
    """The texts of a content that may only hold text (string, or a list of text parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or a list of content parts")
    return [_text_part_of(part, f"{where}.content[{i}]", allowed) for i, part in enumerate(content)]


def _text_part_of(part: Any, where: str, allowed: tuple[str, ...]) -> str:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind not in allowed:
        raise _bad(f"{where}: only {' and '.join(allowed)} parts are supported here")
    text = part.get(kind if kind == "refusal" else "text")
    if not isinstance(text, str):
        raise _bad(f"{where}.{kind} must be a string")
    return text


def _mime_from_name(name: str, default: str) -> str:
    path = name.split("?", 1)[0].split("#", 1)[0]
    ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    return _MIME_BY_EXT.get(ext, default)


def _media_part(url: Any, where: str, default_mime: str = "image/jpeg") -> dict[str, Any]:
    if not isinstance(url, str) or not url:
        raise _bad(f"{where} must be a non-empty URL string")
    if url.startswith("data:"):
        header, sep, payload = url[5:].partition(",")
        mime, _, enc = header.partition(";")
        if not sep or enc.lower() != "base64" or not payload:
            raise _bad(f"{where}: data: URLs must be base64-encoded (data:<mime>;base64,<data>)")
        return {"inlineData": {"mimeType": mime or default_mime, "data": payload}}
    if url.startswith(("https://", "gs://")):
        return {"fileData": {"mimeType": _mime_from_name(url, default_mime), "fileUri": url}}
    raise _bad(f"{where}: only data:, https:// and gs:// URLs are supported")


def _user_part(part: Any, where: str) -> dict[str, Any] | None:
    """One user content part as a Gemini part (None for an empty text)."""
    if not isinstance(part, dict):
        raise _bad(f"{where} must be a content part object")
    kind = part.get("type")
    handler = _PART_HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        raise _bad(f"{where}: unsupported content part type {kind!r}")
    return handler(part, where)


def _text_part(part: dict[str, Any], where: str) -> dict[str, Any] | None:
    if not isinstance(part.get("text"), str):
        raise _bad(f"{where}.text must be a string")
    return {"text": part["text"]} if part["text"] else None


def _image_part(part: dict[str, Any], where: str) -> dict[str, Any] | None:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    return _media_part(url, f"{where}.image_url.url")


def _audio_part(part: dict[str, Any], where: str) -> dict[str, Any] | None:
    audio = part.get("input_audio")
    data = audio.get("data") if isinstance(audio, dict) else None
    fmt = audio.get("format") if isinstance(audio, dict) else None
    if not isinstance(data, str) or not data or fmt not in _AUDIO_MIME:
        raise _bad(f"{where}.input_audio needs base64 'data' and a 'format' among {sorted(_AUDIO_MIME)}")
    return {"inlineData": {"mimeType": _AUDIO_MIME[fmt], "data": data}}


def _file_part(part: dict[str, Any], where: str) -> dict[str, Any] | None:
    file = part.get("file")
    if not isinstance(file, dict):
        raise _bad(f"{where}.file must be an object")
    data, file_id = file.get("file_data"), file.get("file_id")
    filename = file.get("filename")
    mime = _mime_from_name(filename if isinstance(filename, str) else "", "application/pdf")
    if isinstance(data, str) and data.startswith("data:"):
        return _media_part(data, f"{where}.file.file_data", mime)
    if isinstance(data, str) and data:
        return {"inlineData": {"mimeType": mime, "data": data}}
    if isinstance(file_id, str) and file_id.startswith(("https://", "gs://")):
        return _media_part(file_id, f"{where}.file.file_id", mime)
    raise _bad(f"{where}.file: give file_data (base64 or a data: URL) or a gs:// / https:// file_id; "
               "uploaded file ids are not supported by this provider")


_PART_HANDLERS: dict[str, Callable[[dict[str, Any], str], dict[str, Any] | None]] = {
    "text": _text_part, "image_url": _image_part, "input_audio": _audio_part, "file": _file_part,
}


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or a list of content parts")
    parts = [_user_part(p, f"{where}.content[{i}]") for i, p in enumerate(content)]
    return [p for p in parts if p is not None]


def _function_call_part(call: Any, where: str) -> tuple[str, str, dict[str, Any]]:
    fn = call.get("function") if isinstance(call, dict) else None
    call_id = call.get("id") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(call_id, str) or not call_id:
        raise _bad(f"{where} must be an object with 'id' and 'function'")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(f"{where}.function.name must be a non-empty string")
    part: dict[str, Any] = {"functionCall": {"name": name, "args": _call_args(fn.get("arguments"), where)}}
    signature = thought_signature_from_id(call_id)
    if signature:
        part["thoughtSignature"] = signature
    return call_id, name, part


def _call_args(raw: Any, where: str) -> dict[str, Any]:
    """A tool call's ``arguments`` (a JSON string, or already an object) as an object."""
    if isinstance(raw, str):
        try:
            args = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise _bad(f"{where}.function.arguments is not valid JSON") from None
    else:
        args = {} if raw is None else raw
    if not isinstance(args, dict):
        raise _bad(f"{where}.function.arguments must be a JSON object")
    return args


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": list(parts)})


@dataclass
class _Turns:
    """A conversion in progress: system parts, Gemini turns, and the tool calls seen so far
    (``names``: every call id -> function name; ``pending``: those not answered yet)."""

    system: list[dict[str, Any]] = field(default_factory=list)
    contents: list[dict[str, Any]] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)

    def check_answered(self, role: str, where: str) -> None:
        """A new user turn, or a new assistant turn, must come after every pending call's answer."""
        if self.pending and (role == "user" or (role == "assistant" and self.contents[-1]["role"] != "model")):
            raise _bad(f"{where}: the assistant's tool_calls {sorted(self.pending)} "
                       "have no tool message answering them")


def convert_messages(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents) for an OpenAI ``messages`` list."""
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list")
    turns = _Turns()
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        role = _role_of(msg, where)
        turns.check_answered(role, where)
        _ROLE_HANDLERS.get(role, _unknown_role)(turns, msg, where)
    if turns.pending:
        raise _bad(f"the assistant's tool_calls {sorted(turns.pending)} have no tool message answering them")
    if not turns.contents:
        raise _bad("'messages' must contain at least one user or assistant message with content")
    return turns.system, turns.contents


def _role_of(msg: Any, where: str) -> str:
    if not isinstance(msg, dict):
        raise _bad(f"{where} must be an object")
    role = msg.get("role")
    if not isinstance(role, str) or not role:
        raise _bad(f"{where}.role is required")
    return role


def _system_message(turns: _Turns, msg: dict[str, Any], where: str) -> None:
    turns.system.extend({"text": t} for t in _text_of(msg.get("content"), where) if t)


def _user_message(turns: _Turns, msg: dict[str, Any], where: str) -> None:
    _append(turns.contents, "user", _user_parts(msg.get("content"), where))


def _assistant_message(turns: _Turns, msg: dict[str, Any], where: str) -> None:
    """Text (and refusal) parts, then one ``functionCall`` part per tool call, as a model turn."""
    texts = _text_of(msg.get("content"), where, ("text", "refusal"))
    parts: list[dict[str, Any]] = [{"text": t} for t in texts if t]
    calls = msg.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise _bad(f"{where}.tool_calls must be a list")
    for j, call in enumerate(calls or ()):
        call_id, name, part = _function_call_part(call, f"{where}.tool_calls[{j}]")
        turns.names[call_id] = turns.pending[call_id] = name
        parts.append(part)
    _append(turns.contents, "model", parts)


def _tool_message(turns: _Turns, msg: dict[str, Any], where: str) -> None:
    """A tool result as a ``functionResponse`` part, named after the call it answers."""
    answered = msg.get("tool_call_id")
    if not isinstance(answered, str) or answered not in turns.names:
        raise _bad(f"{where}.tool_call_id does not match any earlier assistant tool call")
    if answered not in turns.pending:
        raise _bad(f"{where}: tool_call_id {answered!r} was already answered")
    text = "".join(_text_of(msg.get("content"), where))
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"content": text}
    reply = {"functionResponse": {"name": turns.pending.pop(answered), "response": response}}
    _append(turns.contents, "user", [reply])


def _unknown_role(turns: _Turns, msg: dict[str, Any], where: str) -> None:
    raise _bad(f"{where}.role {msg['role']!r} is not supported "
               "(use system, developer, user, assistant or tool)")


_ROLE_HANDLERS: dict[str, Callable[[_Turns, dict[str, Any], str], None]] = {
    "system": _system_message, "developer": _system_message, "user": _user_message,
    "assistant": _assistant_message, "tool": _tool_message,
}
