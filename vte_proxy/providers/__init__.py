"""Provider types, one module each, behind :class:`vte_proxy.providers.base.Provider`."""

from __future__ import annotations

import httpx

from vte_proxy.config import ProviderConfig
from vte_proxy.providers.base import Provider


def build_provider(config: ProviderConfig, transport: httpx.AsyncBaseTransport | None = None) -> Provider:
    """A provider of ``config.type``; ``transport`` replaces the network (tests)."""
    if config.type == "openai":
        from vte_proxy.providers.openai import OpenAIProvider

        return OpenAIProvider(config, transport)
    if config.type == "vertex-express":
        from vte_proxy.providers.vertex import VertexExpressProvider

        return VertexExpressProvider(config, transport)
    from vte_proxy.providers.echo import EchoProvider

    return EchoProvider(config)
