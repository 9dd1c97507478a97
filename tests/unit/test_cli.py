"""In-process parts of the command line: where ``serve`` listens."""

from __future__ import annotations

import hashlib

import pytest

from tests.support import ROOT
from vte_proxy.cli import has_demo_key, listen_host
from vte_proxy.config import GatewayConfig, KeyConfig
from vte_proxy.loader import load_config
from vte_proxy.settings import Settings

ECHO = {"name": "demo", "type": "echo", "prefix": "demo", "models": ["echo"]}


def config(*keys: KeyConfig) -> GatewayConfig:
    return GatewayConfig.model_validate({"version": 1, "keys": keys, "providers": [ECHO]})


def test_the_example_config_holds_the_public_demo_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VTE_DEMO_KEY", raising=False)
    assert has_demo_key(load_config(str(ROOT / "gateway.yaml.example")).config)
    monkeypatch.setenv("VTE_DEMO_KEY", "sk-a-private-key-of-my-own")
    assert not has_demo_key(load_config(str(ROOT / "gateway.yaml.example")).config)


def test_demo_key_binds_loopback_unless_a_host_is_asked_for(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("VTE_HOST", raising=False)
    demo = config(KeyConfig(name="demo", key="sk-demo"))  # type: ignore[arg-type]
    hashed = config(KeyConfig(name="demo", key_sha256=hashlib.sha256(b"sk-demo").hexdigest().upper()))
    for cfg in (demo, hashed):
        assert listen_host(Settings(), cfg) == "127.0.0.1"
    assert "public demo key" in caplog.text
    assert listen_host(Settings(host="0.0.0.0"), demo) == "0.0.0.0"  # asked for: honoured, with a warning
    monkeypatch.setenv("VTE_HOST", "0.0.0.0")
    assert listen_host(Settings(), demo) == "0.0.0.0"


def test_other_keys_keep_the_documented_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VTE_HOST", raising=False)
    private = config(KeyConfig(name="team", key="sk-demo-but-longer"))  # type: ignore[arg-type]
    assert listen_host(Settings(), private) == "0.0.0.0"
