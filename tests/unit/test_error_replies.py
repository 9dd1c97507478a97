"""Custom error replies: matching by status and/or code, the message replaced, the shape kept."""

from __future__ import annotations

import orjson

from vte_proxy.config import ErrorReply
from vte_proxy.error_replies import apply, error_codes, match
from vte_proxy.errors import GatewayError, UpstreamError


def status_error(provider: str, status: int, body: bytes, retry_after: str | None) -> UpstreamError:
    """An upstream's error response as the upstream boundary raises it (its body passed through)."""
    return UpstreamError(provider, status, f"provider {provider!r} answered HTTP {status}", "status",
                         retryable=status == 429, body=body if body[:1] == b"{" else None,
                         headers={"retry-after": retry_after} if retry_after else None)


RULES = (ErrorReply(status=429, code="insufficient_quota", message="Quota used up."),
         ErrorReply(status=429, message="Slow down."),
         ErrorReply(code="model_not_found", message="No such model here."))


def test_first_matching_rule_wins() -> None:
    assert match(RULES, 429, {"insufficient_quota"}) is RULES[0]
    assert match(RULES, 429, {"rate_limited"}) is RULES[1]
    assert match(RULES, 404, {"model_not_found"}) is RULES[2]
    assert match(RULES, 500, {"x"}) is None


def test_a_gateway_error_gets_the_new_message_and_keeps_the_rest() -> None:
    err = GatewayError(429, "rate limited", code="rate_limited", headers={"retry-after": "3"})
    out = apply(RULES, err)
    assert out is not err and err.message == "rate limited"
    assert (out.status, out.message, out.code, out.headers) == (429, "Slow down.", "rate_limited", {"retry-after": "3"})
    assert orjson.loads(out.json()) == {"error": {"message": "Slow down.", "type": "rate_limit_error",
                                                  "code": "rate_limited"}}


def test_an_upstream_body_is_matched_by_its_code_and_keeps_its_shape() -> None:
    body = orjson.dumps({"error": {"message": "You exceeded your quota", "type": "insufficient_quota",
                                   "code": "insufficient_quota", "param": None}})
    err = status_error("up", 429, body, "20")
    assert "insufficient_quota" in error_codes(err)
    out = apply(RULES, err)
    assert isinstance(out, UpstreamError)
    assert orjson.loads(out.json()) == {"error": {"message": "Quota used up.", "type": "insufficient_quota",
                                                  "code": "insufficient_quota", "param": None}}
    assert out.headers == {"retry-after": "20"}


def test_an_anthropic_shaped_upstream_body_stays_anthropic_shaped() -> None:
    body = orjson.dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "Too many"}})
    out = apply((ErrorReply(code="rate_limit_error", message="Later, please."),), status_error("c", 429, body, None))
    assert orjson.loads(out.json()) == {"type": "error", "error": {"type": "rate_limit_error",
                                                                   "message": "Later, please."}}


def test_an_upstream_body_without_an_error_object_becomes_the_gateways_shape() -> None:
    out = apply(RULES, status_error("up", 429, b'{"detail": "busy"}', None))
    assert orjson.loads(out.json())["error"]["message"] == "Slow down."


def test_no_rule_no_change() -> None:
    err = GatewayError(400, "bad")
    assert apply(RULES, err) is err
    assert apply((), err) is err
