"""The request's sampling, length, stop, output format and reasoning fields -> Gemini
``generationConfig`` (range-checked: a value Vertex would refuse is a 400 naming the field)."""

from __future__ import annotations

import math
from typing import Any

from vte_proxy.providers.vertex_schema import clean_schema
from vte_proxy.providers.vertex_schema import invalid as _bad  # the 400 for any untranslatable field

# reasoning_effort -> thinkingConfig.thinkingBudget (the budgets Google's own OpenAI layer uses).
_THINKING_BUDGET = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
_PENALTY_MAX = math.nextafter(2.0, 0.0)  # Vertex's penalty range is [-2, 2)


def _number(body: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(f"'{key}' must be a number")
    if not lo <= value <= hi:
        raise _bad(f"'{key}' must be between {lo:g} and {hi:g}")
    return value


def _integer(body: dict[str, Any], key: str, lo: int, hi: int = 2**31 - 1) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"'{key}' must be an integer")
    if not lo <= value <= hi:
        raise _bad(f"'{key}' must be between {lo} and {hi}")
    return value


_SAMPLING = (("temperature", "temperature", 0.0, 2.0), ("top_p", "topP", 0.0, 1.0),
             ("presence_penalty", "presencePenalty", -2.0, 2.0), ("frequency_penalty", "frequencyPenalty", -2.0, 2.0))
_INT_MAX = 2**31 - 1
_INTEGERS = (("top_k", "topK", 1, _INT_MAX), ("n", "candidateCount", 1, 8), ("seed", "seed", -(2**31), _INT_MAX),
             ("max_tokens", "maxOutputTokens", 1, _INT_MAX), ("max_completion_tokens", "maxOutputTokens", 1, _INT_MAX))


def generation_config(body: dict[str, Any]) -> dict[str, Any]:
    """The request's sampling, length, stop, output format and reasoning fields as ``generationConfig``."""
    out: dict[str, Any] = {}
    for add in (_add_sampling, _add_integers, _add_stop, _add_response_format, _add_thinking):
        add(body, out)
    return out


def _add_sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    for key, wire, lo, hi in _SAMPLING:
        num = _number(body, key, lo, hi)
        if num is not None:
            out[wire] = min(num, _PENALTY_MAX) if wire.endswith("Penalty") else num


def _add_integers(body: dict[str, Any], out: dict[str, Any]) -> None:
    for key, wire, lo, hi in _INTEGERS:
        value = _integer(body, key, lo, hi)
        if value is not None:
            out[wire] = value


def _add_stop(body: dict[str, Any], out: dict[str, Any]) -> None:
    stop = body.get("stop")
    if stop is None:
        return
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > 5:
        raise _bad("'stop' must be a string or a list of at most 5 strings")
    if [s for s in stops if s]:
        out["stopSequences"] = [s for s in stops if s]


def _add_response_format(body: dict[str, Any], out: dict[str, Any]) -> None:
    """``response_format`` json_object / json_schema -> JSON output (with the cleaned schema)."""
    fmt = body.get("response_format")
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise _bad("'response_format.type' must be 'text', 'json_object' or 'json_schema'")
    if kind != "text":
        out["responseMimeType"] = "application/json"
    if kind == "json_schema":
        _add_response_schema(fmt.get("json_schema"), out)


def _add_response_schema(spec: Any, out: dict[str, Any]) -> None:
    if not isinstance(spec, dict):
        raise _bad("'response_format.json_schema' must be an object")
    if spec.get("schema") is not None:
        schema = clean_schema(spec["schema"], "response_format.json_schema.schema")
        if schema:
            out["responseSchema"] = schema


def _add_thinking(body: dict[str, Any], out: dict[str, Any]) -> None:
    effort = body.get("reasoning_effort")
    if effort is None:
        return
    if effort not in _THINKING_BUDGET:
        raise _bad(f"'reasoning_effort' must be one of {', '.join(_THINKING_BUDGET)}")
    out["thinkingConfig"] = {"thinkingBudget": _THINKING_BUDGET[effort]}
