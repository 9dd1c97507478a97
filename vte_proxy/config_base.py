"""The building blocks of the config models: the frozen base model and the ``Duration`` type."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """``5s``, ``250ms``, ``10m``, ``1h`` or a number of seconds -> seconds as a float."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 250ms, 10m or a number of seconds")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError("expected a duration like 30s, 250ms, 10m or a number of seconds")


_DURATION_SCHEMA = {"anyOf": [{"type": "number", "minimum": 0},
                              {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"}],
                    "description": "A duration: 30s, 250ms, 10m, 1h, or a number of seconds."}
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0), WithJsonSchema(_DURATION_SCHEMA)]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
