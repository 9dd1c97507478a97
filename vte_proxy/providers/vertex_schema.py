"""JSON Schema (OpenAI tool parameters, ``response_format``) -> Vertex AI ``Schema``.

Vertex accepts an OpenAPI 3.0 subset: upper-case ``type``, ``nullable`` instead of ``null`` types,
``anyOf`` only as the sole field, no ``$ref`` / ``additionalProperties`` / ``const``. Pure
translation, no I/O; the input is never mutated. Part of the ``vertex-express`` mapping
(:mod:`vte_proxy.providers.vertex_mapping`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
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
    return _clean(schema, _Ctx(defs, where))


def _ref_target(ref: Any, defs: dict[str, Any], where: str) -> tuple[str, Any]:
    for prefix in ("#/$defs/", "#/definitions/"):
        if isinstance(ref, str) and ref.startswith(prefix) and ref[len(prefix):] in defs:
            return ref[len(prefix):], defs[ref[len(prefix):]]
    raise invalid(f"{where}: unsupported $ref {ref!r} (only local #/$defs/ or #/definitions/ references)")


def _merge_all_of(schema: dict[str, Any], defs: dict[str, Any], where: str) -> dict[str, Any]:
    """``allOf`` folded into one schema: properties and required lists add up, the first value
    of any other keyword wins."""
    subs = schema["allOf"]
    if not isinstance(subs, list):
        raise invalid(f"{where}.allOf must be a list")
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for sub in subs:
        for key, value in _all_of_entry(sub, defs, where).items():
            _merge_keyword(merged, key, value)
    return merged


def _all_of_entry(sub: Any, defs: dict[str, Any], where: str) -> dict[str, Any]:
    """One ``allOf`` entry as a schema object (a ``$ref`` entry inlined, one level)."""
    if isinstance(sub, dict) and "$ref" in sub:
        target = _ref_target(sub["$ref"], defs, where)[1]
        sub = {**target, **{k: v for k, v in sub.items() if k != "$ref"}}
    if not isinstance(sub, dict):
        raise invalid(f"{where}.allOf entries must be objects")
    return sub


def _merge_keyword(merged: dict[str, Any], key: str, value: Any) -> None:
    if key == "properties" and isinstance(value, dict):
        merged["properties"] = {**merged.get("properties", {}), **value}
    elif key == "required" and isinstance(value, list):
        merged["required"] = [*merged.get("required", []), *value]
    else:
        merged.setdefault(key, value)


def _extend(schema: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with ``extra`` (description, nullable) added; into each variant of an anyOf, as
    Vertex refuses anyOf with siblings ("When using any_of, it must be the only field set")."""
    if "anyOf" in schema:
        return {"anyOf": [_extend(variant, extra) for variant in schema["anyOf"]]}
    return {**extra, **schema, **({"nullable": True} if extra.get("nullable") else {})}


@dataclass(frozen=True, slots=True)
class _Ctx:
    """Where a (sub)schema sits: the shared ``$defs``, its place for messages, the ``$ref`` names
    being expanded (to refuse recursion) and the nesting depth (to refuse runaway schemas)."""

    defs: dict[str, Any]
    where: str
    refs: tuple[str, ...] = ()
    depth: int = 0

    def deeper(self, ref: str | None = None) -> _Ctx:
        """The same place one level down (a ``$ref`` or ``allOf`` expansion)."""
        refs = self.refs if ref is None else (*self.refs, ref)
        return _Ctx(self.defs, self.where, refs, self.depth + 1)

    def sub(self, value: Any, path: str) -> dict[str, Any]:
        """``value`` cleaned as the child schema at ``path`` (``.items``, ``.properties.x``)."""
        return _clean(value, _Ctx(self.defs, f"{self.where}{path}", self.refs, self.depth + 1))


def _clean(schema: Any, ctx: _Ctx) -> dict[str, Any]:
    if schema is True or schema == {}:
        return {}
    if not isinstance(schema, dict):
        raise invalid(f"{ctx.where} must be a JSON schema object")
    if ctx.depth > _MAX_SCHEMA_DEPTH:
        raise invalid(f"{ctx.where}: JSON schema nested too deeply")
    if "$ref" in schema:
        return _clean_ref(schema, ctx)
    if "allOf" in schema:
        return _clean(_merge_all_of(schema, ctx.defs, ctx.where), ctx.deeper())
    return _clean_plain(schema, ctx)


def _clean_ref(schema: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
    """A ``$ref`` inlined (its siblings win over the target's keys)."""
    name, target = _ref_target(schema["$ref"], ctx.defs, ctx.where)
    if name in ctx.refs:
        raise invalid(f"{ctx.where}: recursive $ref {schema['$ref']!r} is not supported")
    if not isinstance(target, dict):
        raise invalid(f"{ctx.where}: $ref {schema['$ref']!r} does not point to a schema object")
    merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return _clean(merged, ctx.deeper(name))


def _clean_plain(schema: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
    """A schema without ``$ref`` / ``allOf``: a union, or one type and its keywords."""
    out: dict[str, Any] = {}
    description = schema.get("description")
    if isinstance(description, str) and description:
        out["description"] = description
    jtype, nullable, variants = _type_and_variants(schema)
    if variants is not None:
        return _clean_variants(variants, out, nullable, ctx)
    enum = schema.get("enum", [schema["const"]] if "const" in schema else None)
    values = [v for v in enum if v is not None] if isinstance(enum, list) else []
    jtype, nullable = _vertex_type(jtype, nullable, schema, values, ctx.where)
    if jtype is not None:
        out["type"] = jtype.upper()
    if nullable:
        out["nullable"] = True
    _add_enum(out, enum, values, jtype)
    _add_format(out, schema, jtype)
    _KEYWORDS.get(jtype or "", _no_keywords)(schema, out, ctx)
    return out


def _type_and_variants(schema: dict[str, Any]) -> tuple[Any, bool, Any]:
    """(type, nullable, union variants); a list of types becomes one type or a union."""
    nullable = schema.get("nullable") is True
    jtype = schema.get("type")
    variants = schema.get("anyOf", schema.get("oneOf"))
    if not isinstance(jtype, list):
        return jtype, nullable, variants
    names = [t for t in jtype if t != "null"]
    if len(names) > 1:
        rest = {k: v for k, v in schema.items() if k not in ("type", "description", "nullable")}
        variants = [{**rest, "type": t} for t in names]
    return (names[0] if len(names) == 1 else None), nullable or len(names) < len(jtype), variants


def _clean_variants(variants: Any, out: dict[str, Any], nullable: bool, ctx: _Ctx) -> dict[str, Any]:
    """``anyOf`` / ``oneOf``: ``null`` variants become ``nullable``; a single variant is unwrapped."""
    if not isinstance(variants, list):
        raise invalid(f"{ctx.where}.anyOf must be a list")
    cleaned = []
    for i, variant in enumerate(variants):
        if isinstance(variant, dict) and variant.get("type") == "null":
            nullable = True
        else:
            cleaned.append(ctx.sub(variant, f".anyOf[{i}]"))
    if nullable:
        out["nullable"] = True
    if len(cleaned) == 1:
        return _extend(cleaned[0], out)
    return {"anyOf": [_extend(variant, out) for variant in cleaned]} if cleaned else out


def _vertex_type(jtype: Any, nullable: bool, schema: dict[str, Any], values: list[Any],
                 where: str) -> tuple[str | None, bool]:
    """(lower-case type or None, nullable): inferred when absent, ``null`` turned into ``nullable``."""
    if jtype is None:
        jtype = _infer_type(schema, values)
    if jtype == "null":
        return None, True
    if jtype is None:
        return None, nullable
    if not isinstance(jtype, str) or jtype.lower() not in _TYPES:
        raise invalid(f"{where}: unsupported JSON schema type {jtype!r}")
    return jtype.lower(), nullable


def _infer_type(schema: dict[str, Any], values: list[Any]) -> str | None:
    """The type a schema without ``type`` implies by its keywords or its enum values."""
    if isinstance(schema.get("properties"), dict):
        return "object"
    if "items" in schema:
        return "array"
    if not values:
        return None
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) == len(values):
        return "integer" if all(isinstance(v, int) for v in numbers) else "number"
    return "string"


def _add_enum(out: dict[str, Any], enum: Any, values: list[Any], jtype: str | None) -> None:
    """``enum`` / ``const``: kept on strings; Vertex refuses other enums, so those become text."""
    if not isinstance(enum, list) or not enum:
        return
    if None in enum:
        out["nullable"] = True
    if jtype == "string":
        out["enum"] = [v if isinstance(v, str) else json.dumps(v) for v in values]
    elif values:
        note = "Allowed values: " + ", ".join(json.dumps(v) for v in values) + "."
        out["description"] = f"{out['description']} {note}" if "description" in out else note


def _add_format(out: dict[str, Any], schema: dict[str, Any], jtype: str | None) -> None:
    fmt = schema.get("format")
    if isinstance(fmt, str) and (jtype, fmt) in _FORMATS:
        out["format"] = fmt


def _copy_counts(out: dict[str, Any], schema: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Copy the non-negative integer keywords among ``keys`` (minLength, maxItems, ...)."""
    for key in keys:
        value = schema.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            out[key] = value


def _string_keywords(schema: dict[str, Any], out: dict[str, Any], ctx: _Ctx) -> None:
    _copy_counts(out, schema, ("minLength", "maxLength"))
    if isinstance(schema.get("pattern"), str):
        out["pattern"] = schema["pattern"]


def _number_keywords(schema: dict[str, Any], out: dict[str, Any], ctx: _Ctx) -> None:
    for key in ("minimum", "maximum"):
        value = schema.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value


def _array_keywords(schema: dict[str, Any], out: dict[str, Any], ctx: _Ctx) -> None:
    _copy_counts(out, schema, ("minItems", "maxItems"))
    items = schema.get("items")
    if isinstance(items, list):  # tuple validation: accept any of the listed item schemas
        items = items[0] if len(items) == 1 else {"anyOf": items} if items else None
    if items is not None:
        out["items"] = ctx.sub(items, ".items")


def _object_keywords(schema: dict[str, Any], out: dict[str, Any], ctx: _Ctx) -> None:
    _copy_counts(out, schema, ("minProperties", "maxProperties"))
    props = schema.get("properties")
    if props is not None and not isinstance(props, dict):
        raise invalid(f"{ctx.where}.properties must be an object")
    if not props:
        return
    out["properties"] = {str(k): ctx.sub(v, f".properties.{k}") for k, v in props.items()}
    required = schema.get("required")
    names = [r for r in required if isinstance(r, str) and r in props] if isinstance(required, list) else []
    if names:
        out["required"] = list(dict.fromkeys(names))


def _no_keywords(schema: dict[str, Any], out: dict[str, Any], ctx: _Ctx) -> None:
    """Booleans (and untyped schemas) carry no keywords Vertex would keep."""


_TYPES = ("string", "number", "integer", "boolean", "array", "object")
_FORMATS = {("string", "date-time"), ("string", "enum"), ("number", "float"), ("number", "double"),
            ("integer", "int32"), ("integer", "int64")}
# The keywords Vertex keeps, by (lower-case) type; each handler adds them to ``out``.
_KEYWORDS: dict[str, Callable[[dict[str, Any], dict[str, Any], _Ctx], None]] = {
    "string": _string_keywords, "number": _number_keywords, "integer": _number_keywords,
    "array": _array_keywords, "object": _object_keywords,
}
