"""JSON Schema (OpenAI tool parameters, ``response_format``) -> Vertex AI ``Schema``.

Vertex accepts an OpenAPI 3.0 subset: upper-case ``type``, ``nullable`` instead of ``null`` types,
``anyOf`` only as the sole field, no ``$ref`` / ``additionalProperties`` / ``const``. Pure
translation, no I/O; the input is never mutated. Part of the ``vertex-express`` mapping
(:mod:`vte_proxy.providers.vertex_mapping`).
"""

from __future__ import annotations

import json
from typing import Any

from vte_proxy.errors import GatewayError

_MAX_SCHEMA_DEPTH = 64


def invalid(message: str) -> GatewayError:
    """The 400 every untranslatable part of a chat request raises (request and schema side)."""
    return GatewayError(400, message, code="invalid_request")


def clean_schema(schema: Any, where: str) -> dict[str, Any]:
    """A JSON Schema rewritten to the subset Vertex accepts (``$ref`` inlined, unknown keys dropped)."""
    if not isinstance(schema, dict):
        raise invalid(f"{where} must be a JSON schema object")
    defs: dict[str, Any] = {}
    for key in ("definitions", "$defs"):
        found = schema.get(key)
        if found is not None:
            if not isinstance(found, dict):
                raise invalid(f"{where}.{key} must be an object")
            defs.update(found)
    return _clean(schema, defs, where, (), 0)


def _ref_target(ref: Any, defs: dict[str, Any], where: str) -> tuple[str, Any]:
    for prefix in ("#/$defs/", "#/definitions/"):
        if isinstance(ref, str) and ref.startswith(prefix) and ref[len(prefix):] in defs:
            return ref[len(prefix):], defs[ref[len(prefix):]]
    raise invalid(f"{where}: unsupported $ref {ref!r} (only local #/$defs/ or #/definitions/ references)")


def _merge_all_of(schema: dict[str, Any], defs: dict[str, Any], where: str) -> dict[str, Any]:
    subs = schema["allOf"]
    if not isinstance(subs, list):
        raise invalid(f"{where}.allOf must be a list")
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for sub in subs:
        if isinstance(sub, dict) and "$ref" in sub:
            target = _ref_target(sub["$ref"], defs, where)[1]
            sub = {**target, **{k: v for k, v in sub.items() if k != "$ref"}}
        if not isinstance(sub, dict):
            raise invalid(f"{where}.allOf entries must be objects")
        for key, value in sub.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _extend(schema: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with ``extra`` (description, nullable) added; into each variant of an anyOf, as
    Vertex refuses anyOf with siblings ("When using any_of, it must be the only field set")."""
    if "anyOf" in schema:
        return {"anyOf": [_extend(variant, extra) for variant in schema["anyOf"]]}
    return {**extra, **schema, **({"nullable": True} if extra.get("nullable") else {})}


def _clean(
    schema: Any, defs: dict[str, Any], where: str, refs: tuple[str, ...], depth: int
) -> dict[str, Any]:
    if schema is True or schema == {}:
        return {}
    if not isinstance(schema, dict):
        raise invalid(f"{where} must be a JSON schema object")
    if depth > _MAX_SCHEMA_DEPTH:
        raise invalid(f"{where}: JSON schema nested too deeply")
    if "$ref" in schema:
        name, target = _ref_target(schema["$ref"], defs, where)
        if name in refs:
            raise invalid(f"{where}: recursive $ref {schema['$ref']!r} is not supported")
        if not isinstance(target, dict):
            raise invalid(f"{where}: $ref {schema['$ref']!r} does not point to a schema object")
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _clean(merged, defs, where, (*refs, name), depth + 1)
    if "allOf" in schema:
        return _clean(_merge_all_of(schema, defs, where), defs, where, refs, depth + 1)

    out: dict[str, Any] = {}
    description = schema.get("description")
    if isinstance(description, str) and description:
        out["description"] = description
    nullable = schema.get("nullable") is True
    jtype = schema.get("type")

    def sub(value: Any, path: str) -> dict[str, Any]:
        return _clean(value, defs, f"{where}{path}", refs, depth + 1)

    variants = schema.get("anyOf", schema.get("oneOf"))
    if isinstance(jtype, list):
        names = [t for t in jtype if t != "null"]
        nullable = nullable or len(names) < len(jtype)
        if len(names) > 1:
            rest = {k: v for k, v in schema.items() if k not in ("type", "description", "nullable")}
            variants = [{**rest, "type": t} for t in names]
        jtype = names[0] if len(names) == 1 else None
    if variants is not None:
        if not isinstance(variants, list):
            raise invalid(f"{where}.anyOf must be a list")
        cleaned = []
        for i, variant in enumerate(variants):
            if isinstance(variant, dict) and variant.get("type") == "null":
                nullable = True
            else:
                cleaned.append(sub(variant, f".anyOf[{i}]"))
        if nullable:
            out["nullable"] = True
        if len(cleaned) == 1:
            return _extend(cleaned[0], out)
        return {"anyOf": [_extend(variant, out) for variant in cleaned]} if cleaned else out

    enum = schema.get("enum", [schema["const"]] if "const" in schema else None)
    values = [v for v in enum if v is not None] if isinstance(enum, list) else []
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if jtype is None:
        if isinstance(schema.get("properties"), dict):
            jtype = "object"
        elif "items" in schema:
            jtype = "array"
        elif values:
            if all(isinstance(v, bool) for v in values):
                jtype = "boolean"
            elif len(numbers) == len(values):
                jtype = "integer" if all(isinstance(v, int) for v in numbers) else "number"
            else:
                jtype = "string"
    if jtype == "null":
        jtype, nullable = None, True
    elif jtype is not None:
        if not isinstance(jtype, str) or jtype.lower() not in (
                "string", "number", "integer", "boolean", "array", "object"):
            raise invalid(f"{where}: unsupported JSON schema type {jtype!r}")
        jtype = jtype.lower()
        out["type"] = jtype.upper()
    if nullable:
        out["nullable"] = True

    if isinstance(enum, list) and enum:
        if None in enum:
            out["nullable"] = True
        if jtype == "string":
            out["enum"] = [v if isinstance(v, str) else json.dumps(v) for v in values]
        elif values:  # Vertex only accepts enums on strings: keep the constraint as text
            note = "Allowed values: " + ", ".join(json.dumps(v) for v in values) + "."
            out["description"] = f"{out['description']} {note}" if "description" in out else note

    fmt = schema.get("format")
    if isinstance(fmt, str) and (jtype, fmt) in (
            ("string", "date-time"), ("string", "enum"), ("number", "float"), ("number", "double"),
            ("integer", "int32"), ("integer", "int64")):
        out["format"] = fmt
    int_keys = {"string": ("minLength", "maxLength"), "array": ("minItems", "maxItems"),
                "object": ("minProperties", "maxProperties")}.get(jtype or "", ())
    for key in int_keys:
        value = schema.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            out[key] = value
    if jtype == "string" and isinstance(schema.get("pattern"), str):
        out["pattern"] = schema["pattern"]
    if jtype in ("number", "integer"):
        for key in ("minimum", "maximum"):
            value = schema.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = value
    if jtype == "object":
        props = schema.get("properties")
        if props is not None and not isinstance(props, dict):
            raise invalid(f"{where}.properties must be an object")
        if props:
            out["properties"] = {str(k): sub(v, f".properties.{k}") for k, v in props.items()}
            required = schema.get("required")
            if isinstance(required, list):
                names = [r for r in required if isinstance(r, str) and r in props]
                if names:
                    out["required"] = list(dict.fromkeys(names))
    if jtype == "array":
        items = schema.get("items")
        if isinstance(items, list):  # tuple validation: accept any of the listed item schemas
            items = items[0] if len(items) == 1 else {"anyOf": items} if items else None
        if items is not None:
            out["items"] = sub(items, ".items")
    return out
