"""A provider's secrets and their removal: what in its config may be a credential, in every
form it may show up in, and the :class:`Redactor` that takes them out of text that may reach a
client or a log."""

from __future__ import annotations

import base64
from urllib.parse import unquote, urlsplit

from yarl import URL

from vte_proxy.config import ProviderConfig


def provider_secrets(provider: ProviderConfig) -> list[str]:
    """Everything in a provider's config that may be a credential: its keys (one or a pool),
    header values, the outbound proxy's URL and password, and the userinfo of its base_url and
    proxy (``user:password@``, also as the Basic-auth base64 sent upstream)."""
    secrets = _userinfo_secrets(provider.base_url or "")
    if provider.proxy is not None:
        secrets += _userinfo_secrets(provider.proxy.get_secret_value())
    secrets += [v for v in provider.headers.values() if len(v) >= 8]
    if provider.api_key:
        secrets.append(provider.api_key.get_secret_value())
    secrets.extend(k.key.get_secret_value() for k in provider.api_keys or ())
    if provider.proxy is not None:
        url = URL(provider.proxy.get_secret_value())
        secrets.append(str(url))
        if url.password:
            secrets.append(url.password)
    return secrets


def _userinfo_secrets(url: str) -> list[str]:
    """A URL's credentials in every form they may show up in, longest first (so a whole
    ``user:password`` is redacted before its password alone)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return []
    raw_user, _, raw_password = parts.netloc.rpartition("@")[0].partition(":")
    user, password = unquote(raw_user), unquote(raw_password)
    forms = {f"{raw_user}:{raw_password}", f"{user}:{password}",
             base64.b64encode(f"{user}:{password}".encode("latin-1", "replace")).decode(),
             base64.b64encode(f"{user}:{password}".encode()).decode()}
    # With a password the user name is an account name; without one it is the credential.
    forms |= {raw_password, password} if password else {raw_user, user}
    return sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)


class Redactor:
    """Removes a provider's secrets from text that may reach a client or a log."""

    def __init__(self, secrets: list[str]) -> None:
        self._secrets = [s.encode() for s in secrets if s and len(s) >= 4]

    def bytes(self, data: bytes) -> bytes:
        for s in self._secrets:
            if s in data:
                data = data.replace(s, b"[redacted]")
        return data
