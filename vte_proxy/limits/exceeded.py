"""The 429 the limits answer with, and OpenAI's ``x-ratelimit-*`` headers.

:class:`LimitExceeded` is raised by :class:`~vte_proxy.limits.limiter.Limiter` and
:class:`~vte_proxy.limits.ticket.Ticket`; :func:`limit_headers` computes the headers of the
tightest requests and tokens limits, for a refusal or for an admitted request's answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from vte_proxy.errors import GatewayError
from vte_proxy.limits.store import Check
from vte_proxy.limits.windows import format_reset, seconds_up


class LimitExceeded(GatewayError):
    """429: ``code`` ``rate_limited`` (requests, tokens, concurrency) or ``budget_exceeded``."""

    def __init__(self, scope: str, kind: str, message: str, retry_ms: int | None,
                 headers: dict[str, str]) -> None:
        if retry_ms is not None:  # the openai SDKs prefer the exact retry-after-ms
            headers = {"retry-after": str(seconds_up(retry_ms)), "retry-after-ms": str(retry_ms), **headers}
        super().__init__(429, message, code="budget_exceeded" if kind == "budget" else "rate_limited",
                         type_="rate_limit_error", headers=headers)
        self.scope = scope
        self.kind = kind

    @property
    def target_scope(self) -> bool:
        """Refused by the target's model rule or provider: another target may still have room."""
        return self.scope in ("model", "provider")


def limit_headers(checks: Sequence[Check], used: Sequence[int]) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers for the tightest requests and tokens limits."""
    tightest: dict[str, tuple[int, int, Check]] = {}
    for check, count in zip(checks, used, strict=False):
        kind = check.kind
        if kind == "requests" or kind == "tokens":
            left = max(0, check.limit - count)
            best = tightest.get(kind)
            if best is None or (left, check.ttl_ms) < best[:2]:
                tightest[kind] = (left, check.ttl_ms, check)
    headers: dict[str, str] = {}
    for which, (left, ttl, check) in tightest.items():
        limit, remaining, reset = _HEADER_NAMES[which]
        headers[limit] = str(check.limit)
        headers[remaining] = str(left)
        headers[reset] = format_reset(ttl)
    return headers


_HEADER_NAMES = {kind: (f"x-ratelimit-limit-{kind}", f"x-ratelimit-remaining-{kind}", f"x-ratelimit-reset-{kind}")
                 for kind in ("requests", "tokens")}
