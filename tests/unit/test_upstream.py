"""The upstream boundary in-process: which parts of a provider's config count as secrets."""

from __future__ import annotations

import base64

from vte_proxy.config import ProviderConfig
from vte_proxy.upstream import Redactor, provider_secrets


def provider(base_url: str) -> ProviderConfig:
    return ProviderConfig(name="p", type="openai", base_url=base_url, models=("m",))


def test_base_url_userinfo_is_a_secret_in_every_form() -> None:
    p = provider("https://svc-user:pa%40ss-SECRET-42@llm.internal/v1")
    basic = base64.b64encode(b"svc-user:pa@ss-SECRET-42").decode()
    leaked = (f"proxy said: auth {basic} failed for svc-user:pa%40ss-SECRET-42 (pa@ss-SECRET-42, "
              "pa%40ss-SECRET-42) at llm.internal").encode()
    out = Redactor(provider_secrets(p)).bytes(leaked)
    for secret in (basic, "pa@ss-SECRET-42", "pa%40ss-SECRET-42", "SECRET"):
        assert secret.encode() not in out, out
    assert b"llm.internal" in out  # the host is not a secret


def test_a_user_name_alone_counts_too() -> None:
    p = provider("https://token-SECRET-abcdef@llm.internal/v1")
    basic = base64.b64encode(b"token-SECRET-abcdef:").decode()
    out = Redactor(provider_secrets(p)).bytes(f"{basic} token-SECRET-abcdef".encode())
    assert b"SECRET" not in out and basic.encode() not in out


def test_a_plain_base_url_adds_nothing() -> None:
    assert provider_secrets(provider("https://api.openai.com/v1")) == []
