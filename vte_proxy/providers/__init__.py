"""Provider types, one module each, behind :class:`vte_proxy.providers.base.Provider`."""

from __future__ import annotations

from vte_proxy.config import ProviderConfig
from vte_proxy.providers.base import Provider
from vte_proxy.upstream import ConnectorFactory


def build_provider(config: ProviderConfig, connector: ConnectorFactory | None = None) -> Provider:
    """A provider of ``config.type``; ``connector`` replaces the network (tests)."""
    if config.type == "openai":
        from vte_proxy.providers.openai import OpenAIProvider

        return OpenAIProvider(config, connector)
    if config.type == "anthropic":
        from vte_proxy.providers.anthropic import AnthropicProvider

        return AnthropicProvider(config, connector)
    if config.type == "vertex-express":
        from vte_proxy.providers.vertex import VertexExpressProvider

        return VertexExpressProvider(config, connector)
    from vte_proxy.providers.echo import EchoProvider

    return EchoProvider(config)
