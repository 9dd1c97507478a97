"""Shared fixtures: a scripted upstream and a real gateway process in front of it.

Every module-scoped gateway is made by :func:`gateway_fixture`: a module binds its result to
the name ``stack`` (overriding the default one below), and the per-test fixture ``s`` gives
each test that module's gateway with a fresh upstream script.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import openai
import pytest

from tests.support import CLIENT_KEY, GatewayProcess, ScriptedUpstream, gateway_yaml, running_gateway


class Upstream(Protocol):
    """What a gateway fixture needs of the upstream it points at."""

    url: str

    def reset(self) -> None: ...


U = TypeVar("U", bound=Upstream)


@dataclass
class Stack(Generic[U]):
    """A running gateway process, the upstream it points at and the config it was started with."""

    upstream: U
    gateway: GatewayProcess
    config: str = ""

    def client(self, key: str = CLIENT_KEY, **kw: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=key, max_retries=0, **kw)  # type: ignore[arg-type]

    def fresh(self) -> Stack[U]:
        """This stack with an empty script and no recorded requests (for a new test)."""
        self.upstream.reset()
        return self

    def async_client(self, key: str = CLIENT_KEY) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.gateway.url + "/v1", api_key=key, max_retries=0)


def gateway_fixture(config: Callable[[str], str], *, upstream: str = "module_upstream",
                    **running_gateway_kwargs: Any) -> Any:
    """A module-scoped fixture: one ``vte-proxy serve`` process for a whole test module, started
    with ``config(upstream.url)``, in front of the module-scoped fixture named ``upstream``.
    Bind it to ``stack`` in the module (``stack = gateway_fixture(...)``); tests take ``s``."""

    @pytest.fixture(scope="module")
    def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack[Any]]:
        up = request.getfixturevalue(upstream)
        text = config(up.url)
        with running_gateway(tmp_path_factory.mktemp("gw"), text, **running_gateway_kwargs) as gw:
            yield Stack(up, gw, text)

    return stack


@pytest.fixture(scope="module")
def module_upstream() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream().start()
    yield up
    up.stop()


stack = gateway_fixture(gateway_yaml)  # the default config; a module may bind its own


@pytest.fixture
def s(stack: Stack[Any]) -> Stack[Any]:
    """The module's gateway, its upstream script and recorded requests cleared for this test."""
    return stack.fresh()


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream().start()
    yield up
    up.stop()
