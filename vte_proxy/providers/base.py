"""The one small interface every provider type implements.

A provider takes a :class:`Call` (the client's parsed body, the target, whether to stream
upstream) and returns an answer in OpenAI's wire format: a :class:`JsonAnswer` or a
:class:`StreamAnswer` of SSE events. Policy (stream conversion, model names in answers,
usage, fall-over) lives above it, in :mod:`vte_proxy.proxy`, and is the same for every type.
Failures before the first byte are raised as :class:`~vte_proxy.errors.UpstreamError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from vte_proxy.config import ProviderConfig
from vte_proxy.errors import GatewayError
from vte_proxy.routing import Target

ENDPOINTS = ("chat/completions", "completions", "embeddings", "responses")


@dataclass(slots=True)
class Call:
    endpoint: str                 # one of ENDPOINTS
    body: dict[str, Any]          # the client's JSON body; providers must not mutate it
    target: Target
    stream: bool                  # call the upstream streaming
    headers: dict[str, str] = field(default_factory=dict)  # allow-listed client headers to pass on
    # The name answers must carry: what the client asked for (a route's name, not its target's).
    reply_model: str = ""

    def __post_init__(self) -> None:
        if not self.reply_model:
            self.reply_model = self.target.exposed


@dataclass(slots=True)
class JsonAnswer:
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class StreamAnswer:
    """SSE events (each without its trailing blank line) in OpenAI's format, in batches: each
    item of ``events`` is the list of complete events one upstream read brought.

    ``rewrite_model`` is false when the provider already wrote the exposed name into every
    chunk (translated streams), so the pass-through rewrite can be skipped.
    """

    events: AsyncIterator[list[bytes]]
    close: Callable[[], Awaitable[None]]
    rewrite_model: bool = True
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
