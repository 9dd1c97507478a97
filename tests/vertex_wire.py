"""A strict validator for Vertex AI ``generateContent`` request bodies (test helper).

``validate_gemini_request(body)`` raises :class:`GeminiRequestError` for anything Google's own
SDK types (``google-genai``) would reject, plus the rules Vertex enforces server-side that the
types cannot express. It is deliberately stricter than Vertex where our translator promises
more (e.g. ``$ref``/``additionalProperties`` never reach the wire). Used by the mapping tests
and by the scripted upstream in :mod:`tests.vertex_upstream`, which answers 400 like Vertex.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import pydantic
from google.genai import types

_DATA_FIELDS = ("text", "inlineData", "fileData", "functionCall", "functionResponse",
                "executableCode", "codeExecutionResult")
_FN_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
_SCHEMA_TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"}
_NOT_ON_WIRE = ("additionalProperties", "defs", "ref")  # the translator inlines/strips these
_MIME_TYPES = {"text/plain", "application/json", "text/x.enum"}


class GeminiRequestError(ValueError):
    """The body would be rejected; ``str(exc)`` is a Vertex-like message."""


class _GenerateContentRequest(pydantic.BaseModel):
    """The JSON body of ``models/{model}:generateContent`` (camelCase only, no unknown keys)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    contents: list[types.Content]
    systemInstruction: types.Content | None = None
    tools: list[types.Tool] | None = None
    toolConfig: types.ToolConfig | None = None
    generationConfig: types.GenerationConfig | None = None
    safetySettings: list[types.SafetySetting] | None = None
    cachedContent: str | None = None
    labels: dict[str, str] | None = None


def _fail(message: str) -> GeminiRequestError:
    return GeminiRequestError(message)


_FREE_FORM = frozenset({"args", "response", "default", "example", "labels"})


def _no_nulls(raw: Any, path: str) -> None:
    """The translator never sends JSON nulls; free-form values (args, response, ...) may hold them."""
    items = raw.items() if isinstance(raw, dict) else enumerate(raw) if isinstance(raw, list) else ()
    for key, value in items:
        where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key
        if value is None:
            raise _fail(f"Invalid JSON payload received: null value at '{where}'")
        if key not in _FREE_FORM:
            _no_nulls(value, where)


def _same_keys(raw: Any, dumped: Any, path: str) -> None:
    """Every key of the raw body must survive a by-alias round trip (rejects snake_case keys)."""
    if isinstance(raw, dict) and isinstance(dumped, dict):
        for key, value in raw.items():
            if key not in dumped:
                raise _fail(f"Invalid JSON payload received. Unknown name \"{key}\" at '{path}'")
            _same_keys(value, dumped[key], f"{path}.{key}" if path else key)
    elif isinstance(raw, list) and isinstance(dumped, list):
        for i, (a, b) in enumerate(zip(raw, dumped, strict=False)):
            _same_keys(a, b, f"{path}[{i}]")


def _check_schema(schema: Any, path: str, depth: int = 0) -> None:
    if not isinstance(schema, dict):
        raise _fail(f"{path}: schema must be an object")
    if depth > 64:
        raise _fail(f"{path}: schema nested too deeply")
    for key in _NOT_ON_WIRE:
        if key in schema:
            raise _fail(f"{path}.{key}: not allowed in a translated schema")
    if "anyOf" in schema and len(schema) > 1:
        raise _fail(f"{path}: schema specified other fields alongside any_of. "
                    "When using any_of, it must be the only field set.")
    stype = schema.get("type")
    if stype is not None and stype not in _SCHEMA_TYPES:
        raise _fail(f"{path}.type: invalid value {stype!r}")
    if "enum" in schema and stype not in (None, "STRING"):
        raise _fail(f"{path}.enum: only allowed for STRING type")
    props = schema.get("properties")
    if props is not None:
        if stype != "OBJECT":
            raise _fail(f"{path}.properties: only allowed for OBJECT type")
        if not props:
            raise _fail(f"{path}.properties: should be non-empty for OBJECT type")
        for name, sub in props.items():
            _check_schema(sub, f"{path}.properties[{name}]", depth + 1)
    for name in schema.get("required") or ():
        if name not in (props or {}):
            raise _fail(f"{path}.required[{name}]: property is not defined")
    if "items" in schema:
        if stype != "ARRAY":
            raise _fail(f"{path}.items: only allowed for ARRAY type")
        _check_schema(schema["items"], f"{path}.items", depth + 1)
    for i, sub in enumerate(schema.get("anyOf") or ()):
        _check_schema(sub, f"{path}.anyOf[{i}]", depth + 1)


def _check_part(part: dict[str, Any], role: str, path: str) -> None:
    present = [f for f in _DATA_FIELDS if f in part]
    if len(present) != 1:
        raise _fail(f"{path}: a part must have exactly one data field, found {present or 'none'}")
    kind = present[0]
    if kind == "text" and not part["text"]:
        raise _fail(f"{path}: Unable to submit request because it has an empty text parameter")
    if kind == "inlineData" and not (part["inlineData"].get("mimeType") and part["inlineData"].get("data")):
        raise _fail(f"{path}.inlineData: mimeType and data are required")
    if kind == "fileData":
        data = part["fileData"]
        if not data.get("mimeType") or not str(data.get("fileUri", "")).startswith(("gs://", "https://")):
            raise _fail(f"{path}.fileData: mimeType and a gs:// or https:// fileUri are required")
    if kind == "functionCall":
        if role != "model":
            raise _fail(f"{path}: functionCall parts are only allowed in model turns")
        if not part["functionCall"].get("name"):
            raise _fail(f"{path}.functionCall.name is required")
    if kind == "functionResponse":
        if role != "user":
            raise _fail(f"{path}: functionResponse parts are only allowed in user turns")
        response = part["functionResponse"]
        if not response.get("name") or not isinstance(response.get("response"), dict):
            raise _fail(f"{path}.functionResponse: name and an object response are required")


def _check_contents(contents: list[dict[str, Any]]) -> None:
    if not contents:
        raise _fail("contents is not specified")
    for i, content in enumerate(contents):
        role, parts = content.get("role"), content.get("parts")
        if role not in ("user", "model"):
            raise _fail(f"contents[{i}].role: Please use a valid role: user, model.")
        if not parts:
            raise _fail(f"contents[{i}].parts: contents.parts must not be empty.")
        for j, part in enumerate(parts):
            _check_part(part, role, f"contents[{i}].parts[{j}]")
    for i, content in enumerate(contents):
        calls = [p["functionCall"]["name"] for p in content["parts"] if "functionCall" in p]
        replies = [p["functionResponse"]["name"] for p in content["parts"] if "functionResponse" in p]
        if calls:
            if i == 0 or contents[i - 1]["role"] != "user":
                raise _fail(f"contents[{i}]: Please ensure that function call turn comes immediately after "
                            "a user turn or after a function response turn.")
            nxt = contents[i + 1] if i + 1 < len(contents) else None
            if nxt is not None:
                got = [p["functionResponse"]["name"] for p in nxt["parts"] if "functionResponse" in p]
                if sorted(got) != sorted(calls):
                    raise _fail(f"contents[{i + 1}]: Please ensure that the number of function "
                                "response parts is equal to the number of function call parts "
                                "of the function call turn.")
        if replies and (i == 0 or not any("functionCall" in p for p in contents[i - 1]["parts"])):
            raise _fail(f"contents[{i}]: a function response turn must follow a function call turn")


def _check_tools(body: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for i, tool in enumerate(body.get("tools") or ()):
        for j, decl in enumerate(tool.get("functionDeclarations") or ()):
            path = f"tools[{i}].functionDeclarations[{j}]"
            name = decl.get("name")
            if not isinstance(name, str) or not _FN_NAME_RE.fullmatch(name):
                raise _fail(f"{path}.name: Invalid function name. Must start with a letter or an underscore.")
            if name in names:
                raise _fail(f"{path}.name: Duplicate function declaration found: {name}")
            names.append(name)
            if "parameters" in decl:
                if decl["parameters"].get("type") != "OBJECT":
                    raise _fail(f"{path}.parameters.type: must be OBJECT")
                _check_schema(decl["parameters"], f"{path}.parameters")
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    allowed = config.get("allowedFunctionNames")
    if allowed is not None:
        if config.get("mode") != "ANY":
            raise _fail("toolConfig.functionCallingConfig.allowedFunctionNames requires mode ANY")
        for name in allowed:
            if name not in names:
                raise _fail(f"toolConfig: allowed function {name!r} is not declared")
    return names


def _check_generation(config: dict[str, Any]) -> None:
    def between(key: str, lo: float, hi: float, hi_open: bool = False) -> None:
        value = config.get(key)
        if value is not None and not (lo <= value < hi if hi_open else lo <= value <= hi):
            close = ")" if hi_open else "]"
            raise _fail(f"generationConfig.{key}: {value} is out of range [{lo}, {hi}{close}")

    between("temperature", 0, 2)
    between("topP", 0, 1)
    between("topK", 1, float("inf"))
    between("candidateCount", 1, 8)
    between("maxOutputTokens", 1, float("inf"))
    between("presencePenalty", -2, 2, hi_open=True)
    between("frequencyPenalty", -2, 2, hi_open=True)
    if len(config.get("stopSequences") or ()) > 5:
        raise _fail("generationConfig.stopSequences: at most 5 stop sequences")
    mime = config.get("responseMimeType")
    if mime is not None and mime not in _MIME_TYPES:
        raise _fail(f"generationConfig.responseMimeType: unsupported {mime!r}")
    if "responseSchema" in config:
        if mime != "application/json":
            raise _fail("generationConfig.responseSchema requires responseMimeType application/json")
        _check_schema(config["responseSchema"], "generationConfig.responseSchema")


def validate_gemini_request(body: Any) -> None:
    """Raise :class:`GeminiRequestError` unless ``body`` is a valid Vertex generateContent body."""
    if not isinstance(body, dict):
        raise _fail("Invalid JSON payload received: the body must be an object")
    try:
        raw = json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _fail(f"Invalid JSON payload received: {exc}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the SDK only *warns* about unknown enum values
        try:
            parsed = _GenerateContentRequest.model_validate_json(raw)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise _fail(f"Invalid JSON payload received at '{where}': {first['msg']}") from None
        except Warning as exc:
            raise _fail(f"Invalid value: {exc}") from None
    _no_nulls(body, "")
    _same_keys(body, parsed.model_dump(mode="json", by_alias=True, exclude_unset=True), "")
    _check_contents(body["contents"])
    system = body.get("systemInstruction")
    if system is not None:
        if not system.get("parts") or any(set(p) != {"text"} or not p["text"] for p in system["parts"]):
            raise _fail("systemInstruction: only non-empty text parts are allowed")
        if system.get("role") not in (None, "user", "system"):
            raise _fail("systemInstruction.role: invalid role")
    _check_tools(body)
    _check_generation(body.get("generationConfig") or {})
