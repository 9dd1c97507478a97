"""Ingress dialects (vte_proxy.dialect): how OpenAI request bodies are read and how errors are
written back, as a JSON answer or as the SSE event that ends a started stream."""

from __future__ import annotations

import json

import orjson
import pytest

from vte_proxy.dialect import MAX_DEPTH, MAX_MODEL_NAME, OPENAI, dialect_for_path, parse_openai, too_deep
from vte_proxy.errors import GatewayError, UpstreamError


@pytest.mark.parametrize(("raw", "code"), [
    (b"", "invalid_json"),
    (b"{not json", "invalid_json"),
    (b"\xff\xfe{}", "invalid_json"),
    (b'[{"model": "m"}]', "invalid_json"),
    (b'"a string"', "invalid_json"),
    (b"{}", "invalid_model"),
    (b'{"model": ""}', "invalid_model"),
    (b'{"model": 4}', "invalid_model"),
    (b'{"model": null}', "invalid_model"),
    (orjson.dumps({"model": "m" * (MAX_MODEL_NAME + 1)}), "invalid_model"),
    (b'{"model": "m", "stream": "yes"}', "invalid_stream"),
    (b'{"model": "m", "stream": 1}', "invalid_stream"),
])
def test_parse_openai_refuses_with_a_400_that_names_the_problem(raw: bytes, code: str) -> None:
    with pytest.raises(GatewayError) as info:
        parse_openai(raw)
    assert (info.value.status, info.value.code) == (400, code)
    assert json.loads(OPENAI.error_body(info.value))["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw", [
    b'{"model": "p/m"}',
    b'{"model": "p/m", "stream": true, "extra": {"kept": [1]}}',
    b'{"model": "p/m", "stream": null}',
    orjson.dumps({"model": "m" * MAX_MODEL_NAME}),
])
def test_parse_openai_returns_the_whole_body(raw: bytes) -> None:
    assert parse_openai(raw) == orjson.loads(raw)


@pytest.mark.parametrize(("status", "type_"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (413, "invalid_request_error"), (429, "rate_limit_error"), (500, "api_error"),
    (502, "upstream_error"), (503, "service_unavailable"), (504, "timeout_error"), (418, "invalid_request_error"),
])
def test_openai_error_body_is_the_openai_error_object(status: int, type_: str) -> None:
    body = OPENAI.error_body(GatewayError(status, "what went wrong", "some_code"))
    assert json.loads(body) == {"error": {"message": "what went wrong", "type": type_, "code": "some_code"}}


def test_openai_error_body_without_a_code_has_a_null_code() -> None:
    assert json.loads(OPENAI.error_body(GatewayError(400, "m")))["error"]["code"] is None


def test_an_upstreams_own_error_body_passes_through_both_shapes() -> None:
    own = b'{"error":{"message":"from the upstream","type":"invalid_request_error","code":"x"}}'
    err = UpstreamError("p", 400, "provider 'p' answered HTTP 400", "status", body=own)
    assert OPENAI.error_body(err) == own
    assert OPENAI.error_event(err) == b"data: " + own


def test_openai_error_event_is_one_sse_data_event_with_the_error_object() -> None:
    err = GatewayError(502, "provider 'p' ended the stream before it was complete", "truncated")
    ev = OPENAI.error_event(err)
    assert ev.startswith(b"data: ") and b"\n" not in ev  # the sink adds the blank line that ends it
    assert json.loads(ev[6:]) == json.loads(OPENAI.error_body(err))


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/models"])
def test_openai_paths_answer_in_the_openai_dialect(path: str) -> None:
    assert dialect_for_path(path) is OPENAI and OPENAI.name == "openai"


def nested_body(depth: int) -> bytes:
    """A request whose deepest value sits ``depth`` levels down (the body itself is level 1)."""
    inner = depth - 1
    return b'{"model": "m", "x": ' + b"[" * inner + b"]" * inner + b"}"


def test_nesting_up_to_the_limit_is_fine_beyond_it_is_a_400() -> None:
    assert parse_openai(nested_body(MAX_DEPTH))["model"] == "m"
    for depth in (MAX_DEPTH + 1, 255, 1000):
        with pytest.raises(GatewayError) as exc:
            parse_openai(nested_body(depth))
        assert (exc.value.status, exc.value.code) == (400, "too_deep")


def test_many_brackets_side_by_side_are_not_depth() -> None:
    message = b'{"role": "user", "content": [{"type": "text"}]}'
    wide = b'{"model": "m", "messages": [' + b",".join([message] * 500) + b"]}"
    assert len(parse_openai(wide)["messages"]) == 500
    assert not too_deep({"a": [[{"b": []}]] * 1000})
