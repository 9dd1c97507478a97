"""The gateway's own exceptions and the OpenAI-shaped error body.

Every error a client of an OpenAI path sees is ``{"error": {"message", "type", "code"}}`` with a
matching HTTP status. Code only raises :class:`GatewayError` (or a subclass); the exchange
(:mod:`vte_proxy.exchange`) is the one place that turns it into a response or, once a stream
has started, an SSE error event, in the dialect of the endpoint.
"""

from __future__ import annotations

import orjson

from vte_proxy import metrics

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


def error_body(message: str, status: int, code: str | None = None, type_: str | None = None) -> dict[str, object]:
    """The OpenAI-shaped error object for ``status``."""
    return {
        "error": {
            "message": message,
            "type": type_ or _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error"),
            "code": code,
        }
    }


class GatewayError(Exception):
    """An error the gateway answers with ``status`` and an OpenAI-shaped body.

    ``message`` is shown to the client: it must never contain a secret.
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type_
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return error_body(self.message, self.status, self.code, self.type)

    def json(self) -> bytes:
        return orjson.dumps(self.body())


class UpstreamError(GatewayError):
    """A failure talking to ``provider``, before or during its answer.

    ``reason`` is a closed vocabulary used as a metric label: ``connect``, ``timeout``,
    ``idle``, ``status``, ``protocol``, ``truncated``, ``discovery``, ``pool``. ``retryable`` says whether
    another try (same provider or next route target) may help. Every failure is counted in
    ``vte_upstream_errors_total`` here, where it is created, and nowhere else.
    """

    def __init__(
        self,
        provider: str,
        status: int,
        message: str,
        reason: str,
        *,
        retryable: bool = False,
        code: str | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        answered: bool = True,
    ) -> None:
        super().__init__(status, message, code=code or reason, headers=headers)
        self.provider = provider
        # False when no HTTP answer came back at all (connect error, no headers in time).
        self.answered = answered
        self.reason = reason
        self.retryable = retryable
        # The upstream's own (already redacted) error body, passed through when present.
        self.upstream_body = body
        metrics.child(metrics.UPSTREAM_ERRORS, provider, reason).inc()

    def json(self) -> bytes:
        return self.upstream_body if self.upstream_body is not None else super().json()


def bad_request(message: str, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, code=code)
