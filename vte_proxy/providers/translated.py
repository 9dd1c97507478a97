"""A foreign dialect's stream turned into OpenAI chat chunk events: the loop every translating
provider (``vertex-express``, ``anthropic`` for OpenAI clients) shares. The dialect itself is
the translator's business; this module only reads events, redacts error events, and ends the
stream the same way for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from vte_proxy.errors import UpstreamError
from vte_proxy.providers.base import EventBatches
from vte_proxy.redaction import Redactor
from vte_proxy.sse import DONE, data_of, event, split_events
from vte_proxy.upstream import UpstreamResponse

# One decoded upstream event (any JSON value) -> the OpenAI chunks it stands for.
Feed = Callable[[Any], list[dict[str, Any]]]


class ChunkTranslator(Protocol):
    """What the loop needs of a stream translator besides its ``feed``."""

    @property
    def finished(self) -> bool:
        """Every answer of the stream reached its stop/finish reason."""

    def usage_chunk(self) -> dict[str, Any] | None:
        """The OpenAI usage chunk (``choices: []``), once usage is known."""


async def translated_events(response: UpstreamResponse, redactor: Redactor, translator: ChunkTranslator,
                            feed: Feed) -> EventBatches:
    """The upstream's events as OpenAI chunk events; once the translator has finished, the usage
    chunk and ``[DONE]``. A stream that ends before that simply ends: shaping judges it truncated."""
    provider = response.provider
    try:
        async for batch in split_events(response.iter_bytes(), provider):
            out = [event(chunk) for ev in batch for chunk in _chunks(ev, provider, redactor, feed)]
            if out:
                yield out
    except UpstreamError as exc:
        # A connection lost once every answer finished (while waiting for a trailing usage
        # or stop event) loses nothing the client needs.
        if not translator.finished or exc.reason not in ("truncated", "idle", "timeout"):
            raise
    if translator.finished:
        usage = translator.usage_chunk()  # always sent: shaping drops it unless the client asked
        yield [event(usage), DONE] if usage is not None else [DONE]


def _chunks(ev: bytes, provider: str, redactor: Redactor, feed: Feed) -> list[dict[str, Any]]:
    payload = data_of(ev)
    if payload is None:  # comments, bare event: lines
        return []
    if b'"error"' in payload:
        payload = redactor.bytes(payload)
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise UpstreamError(provider, 502, f"provider {provider!r} sent an invalid stream event",
                            "protocol") from None
    return feed(obj)
