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

from tests.redis_server import redis_server  # noqa: F401 - a fixture for the limits tests
from tests.support import (
    CLIENT_KEY,
    ScriptedUpstream,
    gateway_yaml,
    in_process_gateway,
    running_gateway,
    upstream_test_url,
)


class Upstream(Protocol):
    """What a gateway fixture needs of the upstream it points at."""

    url: str

    def reset(self) -> None: ...


U = TypeVar("U", bound=Upstream)


@dataclass
class Stack(Generic[U]):
    """A running gateway, the upstream it points at and the config it was started with.

    ``gateway`` is a ``vte-proxy serve`` process (:class:`~tests.support.GatewayProcess`), or
    with ``in_process=True`` the app in this process (:class:`~tests.support.InProcessGateway`):
    both have ``url``."""

    upstream: U
    gateway: Any
    config: str = ""

    def client(self, key: str = CLIENT_KEY, **kw: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=key, max_retries=0, **kw)  # type: ignore[arg-type]

    def fresh(self) -> Stack[U]:
        """This stack with an empty script and no recorded requests (for a new test)."""
        self.upstream.reset()
        return self

    def async_client(self, key: str = CLIENT_KEY) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.gateway.url + "/v1", api_key=key, max_retries=0)


def gateway_fixture(config: Callable[[str], str], *, upstream: str = "module_upstream", in_process: bool = False,
                    **gateway_kwargs: Any) -> Any:
    """A module-scoped fixture: one gateway for a whole test module, started with
    ``config(url)`` in front of the module-scoped fixture named ``upstream`` (``url`` is its
    base URL). Bind it to ``stack`` in the module (``stack = gateway_fixture(...)``); tests take ``s``.

    By default the gateway is a ``vte-proxy serve`` process (``gateway_kwargs`` go to
    :func:`~tests.support.running_gateway`); with ``in_process=True`` it is ``create_app`` in this
    process, reaching the upstream as ``http://upstream.test:PORT`` through the injected loopback
    connector (``gateway_kwargs`` go to :func:`~tests.support.in_process_gateway`)."""

    @pytest.fixture(scope="module")
    def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack[Any]]:
        up = request.getfixturevalue(upstream)
        tmp = tmp_path_factory.mktemp("gw")
        if in_process:
            text = config(upstream_test_url(up))
            with in_process_gateway(tmp, text, **gateway_kwargs) as app:
                yield Stack(up, app, text)
            return
        text = config(up.url)
        with running_gateway(tmp, text, **gateway_kwargs) as gw:
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
