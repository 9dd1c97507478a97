"""OpenAI ``tools`` and ``tool_choice`` -> Gemini ``functionDeclarations`` and ``toolConfig``."""

from __future__ import annotations

import re
from typing import Any

from vte_proxy.providers.vertex_schema import clean_schema
from vte_proxy.providers.vertex_schema import invalid as _bad  # the 400 for any untranslatable field

_FN_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
_TOOL_CHOICE_MODE = {"none": "NONE", "auto": "AUTO", "required": "ANY"}


def convert_tools(tools: Any) -> list[dict[str, Any]]:
    """OpenAI ``tools`` -> one Gemini tool holding every function declaration."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _bad("'tools' must be a list")
    decls: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        decls.append(_declaration(tool, f"tools[{i}]", decls))
    return [{"functionDeclarations": decls}] if decls else []


def _declaration(tool: Any, where: str, earlier: list[dict[str, Any]]) -> dict[str, Any]:
    """One function tool as a ``functionDeclaration`` (its name unique among ``earlier``)."""
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise _bad(f"{where}: only tools of type 'function' are supported")
    fn = tool.get("function")
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(fn, dict) or not isinstance(name, str) or not _FN_NAME_RE.fullmatch(name):
        raise _bad(f"{where}.function.name must start with a letter or '_' and contain only "
                   "letters, digits, '_', '.', ':' or '-' (at most 128 characters)")
    if any(d["name"] == name for d in earlier):
        raise _bad(f"{where}: duplicate function name {name!r}")
    decl: dict[str, Any] = {"name": name}
    if isinstance(fn.get("description"), str) and fn["description"]:
        decl["description"] = fn["description"]
    if fn.get("parameters") is not None:
        decl.update(_parameters(fn["parameters"], f"{where}.function.parameters"))
    return decl


def _parameters(schema: Any, where: str) -> dict[str, Any]:
    """``{"parameters": ...}`` for a function's schema, or nothing when it takes no properties."""
    params = clean_schema(schema, where)
    if params.get("type", "OBJECT") != "OBJECT":
        raise _bad(f"{where} must be an object schema")
    return {"parameters": {**params, "type": "OBJECT"}} if params.get("properties") else {}


def convert_tool_choice(choice: Any, declared: list[str]) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in _TOOL_CHOICE_MODE:
        if not declared:
            if choice == "required":
                raise _bad("'tool_choice' is 'required' but no tools are given")
            return None
        return {"functionCallingConfig": {"mode": _TOOL_CHOICE_MODE[choice]}}
    fn = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise _bad("'tool_choice' must be 'none', 'auto', 'required' or "
                   "{\"type\": \"function\", \"function\": {\"name\": ...}}")
    if name not in declared:
        raise _bad(f"'tool_choice' names function {name!r}, which is not in 'tools'")
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
