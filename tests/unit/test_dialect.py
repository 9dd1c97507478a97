"""Ingress dialects in-process: what a request body may be."""

from __future__ import annotations

import pytest

from vte_proxy.dialect import MAX_DEPTH, parse_openai, too_deep
from vte_proxy.errors import GatewayError


def body(depth: int) -> bytes:
    """A request whose deepest value sits ``depth`` levels down (the body itself is level 1)."""
    inner = depth - 1
    return b'{"model": "m", "x": ' + b"[" * inner + b"]" * inner + b"}"


def test_nesting_up_to_the_limit_is_fine_beyond_it_is_a_400() -> None:
    assert parse_openai(body(MAX_DEPTH))["model"] == "m"
    for depth in (MAX_DEPTH + 1, 255, 1000):
        with pytest.raises(GatewayError) as exc:
            parse_openai(body(depth))
        assert (exc.value.status, exc.value.code) == (400, "too_deep")


def test_many_brackets_side_by_side_are_not_depth() -> None:
    message = b'{"role": "user", "content": [{"type": "text"}]}'
    wide = b'{"model": "m", "messages": [' + b",".join([message] * 500) + b"]}"
    assert len(parse_openai(wide)["messages"]) == 500
    assert not too_deep({"a": [[{"b": []}]] * 1000})
