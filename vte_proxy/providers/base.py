"""The one small interface every provider type implements.

A provider takes a :class:`Call` (the client's parsed body in ``call.dialect``, the target,
whether to stream upstream) and returns an :data:`Answer` in its upstream's terms: the
upstream's model name, ids and usage, as a :class:`JsonAnswer` or a :class:`StreamAnswer` of
SSE events in OpenAI's chat format (a provider whose upstream speaks another dialect
translates, see docs/architecture.md). Everything the client sees beyond that (stream
conversion, the exposed model name, usage visibility, completeness) is decided once, in
:mod:`vte_proxy.shaping`. Failures before the first byte are raised as
:class:`~vte_proxy.errors.UpstreamError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from vte_proxy.config import ProviderConfig
from vte_proxy.errors import GatewayError
from vte_proxy.routing import Target

ENDPOINTS = ("chat/completions", "completions", "embeddings", "responses")
# Anthropic Messages endpoints (the ``anthropic`` dialect): native to ``anthropic`` providers,
# translated to chat/completions for the others (vte_proxy.anthropic.calls).
MESSAGES_ENDPOINTS = ("messages", "messages/count_tokens")

# Batches of complete SSE events (each without its trailing blank line): one batch per
# upstream read, so the client side can send them in one write.
EventBatches = AsyncGenerator[list[bytes], None]


# The W3C trace context: every provider sends it upstream (call.headers has the attempt's).
TRACE_HEADERS = ("traceparent", "tracestate")


def trace_context(headers: dict[str, str]) -> dict[str, str]:
    """The W3C trace-context headers among ``headers`` (for upstreams that get no other client header)."""
    return {name: headers[name] for name in TRACE_HEADERS if name in headers}


@dataclass(slots=True)
class Call:
    endpoint: str                 # one of ENDPOINTS or MESSAGES_ENDPOINTS
    body: dict[str, Any]          # the client's JSON body; providers must not mutate it
    target: Target
    stream: bool                  # call the upstream streaming
    headers: dict[str, str] = field(default_factory=dict)  # allow-listed client headers to pass on
    dialect: str = "openai"       # the dialect ``body`` is written in


@dataclass(slots=True)
class JsonAnswer:
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


async def _nothing_to_close() -> None:
    return None


@dataclass(slots=True)
class StreamAnswer:
    """An answer that streams: ``events`` as they arrive; ``close`` releases the upstream
    connection (it is called once, however the stream ends)."""

    events: EventBatches
    close: Callable[[], Awaitable[None]] = _nothing_to_close
    headers: dict[str, str] = field(default_factory=dict)


Answer = JsonAnswer | StreamAnswer


class Provider(ABC):
    """A configured provider: answers calls and (optionally) lists its models."""

    endpoints: tuple[str, ...] = ENDPOINTS

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name

    def check_endpoint(self, endpoint: str) -> None:
        if endpoint not in self.endpoints:
            raise GatewayError(400, f"provider {self.name!r} (type {self.config.type}) does not support "
                               f"/v1/{endpoint}", code="unsupported_endpoint")

    @abstractmethod
    async def send(self, call: Call) -> Answer:
        """Answer ``call``; raise UpstreamError when the upstream fails before its first byte."""

    async def discover(self) -> tuple[str, ...]:
        """The upstream's model ids (only providers with a model list implement this)."""
        raise NotImplementedError

    async def aclose(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release connections; called once the last request using this provider is done."""
