"""How many tokens to reserve when a request starts, before its real usage is known.

The reservation is settled with the real usage when the exchange ends, so the estimate only
decides how much room in-flight requests hold meanwhile: the output is the request's own cap
(``max_tokens``, ``max_completion_tokens`` or ``max_output_tokens``) and the prompt is guessed
from the body's size (about 4 bytes of JSON per token; images inflate it, and it is capped).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

BYTES_PER_TOKEN = 4
# A request that names no output cap holds this many output tokens until it settles.
DEFAULT_OUTPUT = 256
# The prompt guess never exceeds this (a large base64 image is not that many tokens).
PROMPT_CAP = 32_768
_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


class Estimate(NamedTuple):
    """Tokens held at start: ``prompt`` (guessed) + ``completion`` (the request's cap)."""

    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def estimate(body: Mapping[str, Any] | None, body_size: int) -> Estimate:
    """The reservation for a request whose parsed body is ``body`` (``body_size`` bytes)."""
    return Estimate(min(body_size // BYTES_PER_TOKEN, PROMPT_CAP), _output_cap(body))


def _output_cap(body: Mapping[str, Any] | None) -> int:
    for name in _CAPS:
        value = body.get(name) if body is not None else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_OUTPUT
