"""Shared fixtures: a scripted upstream and a real gateway process in front of it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.redis_server import redis_server  # noqa: F401 - a fixture for the limits tests
from tests.support import CLIENT_KEY, GatewayProcess, ScriptedUpstream, gateway_yaml, running_gateway


@dataclass
class Stack:
    upstream: ScriptedUpstream
    gateway: GatewayProcess

    def client(self, key: str = CLIENT_KEY, **kw: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=key, max_retries=0, **kw)  # type: ignore[arg-type]

    def fresh(self) -> Stack:
        """This stack with an empty script and no recorded requests (for a new test)."""
        self.upstream.script.clear()
        self.upstream.requests.clear()
        return self

    def async_client(self, key: str = CLIENT_KEY) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.gateway.url + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def module_upstream() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def stack(module_upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One gateway (default config) for a whole test module; the script is reset per test."""
    tmp: Path = tmp_path_factory.mktemp("gw")
    with running_gateway(tmp, gateway_yaml(module_upstream.url)) as gw:
        yield Stack(module_upstream, gw)


@pytest.fixture
def s(stack: Stack) -> Stack:
    return stack.fresh()


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream().start()
    yield up
    up.stop()
