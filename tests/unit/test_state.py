"""Process state (vte_proxy.state): the state a request pins, the provider-set lease, and
reload's one swap that never lets a broken file take effect."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.support import ECHO_CONFIG, inline_secrets
from vte_proxy.config import ProviderConfig
from vte_proxy.providers.base import Answer, Call, Provider
from vte_proxy.state import Gateway, GatewayState, ProviderSet, pinned_state

CONFIG = ECHO_CONFIG


class Closable(Provider):
    """A provider that only notes when it is closed."""

    def __init__(self, name: str) -> None:
        super().__init__(ProviderConfig(name=name, type="echo", models=("m",)))
        self.closed = 0

    async def send(self, call: Call) -> Answer:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.closed += 1


def gateway(tmp_path: Path, text: str = CONFIG) -> Gateway:
    path = tmp_path / "gateway.yaml"
    path.write_text(inline_secrets(text))
    gw = Gateway(str(path))
    gw.load_initial()
    return gw


async def settle() -> None:
    """Let a scheduled close run."""
    for _ in range(5):
        await asyncio.sleep(0)


# ---------------------------------------------------------------- pinned_state
async def test_a_request_pins_the_state_once(tmp_path: Path) -> None:
    gw = gateway(tmp_path)
    scope: dict[str, Any] = {}
    first = pinned_state(scope, gw)
    assert first is gw.state and scope["vte.state"] is first
    (tmp_path / "gateway.yaml").write_text(CONFIG.replace("prefix: demo", "prefix: other"))
    assert await gw.reload()
    assert gw.state is not first
    assert pinned_state(scope, gw) is first  # every layer of that request: the same state
    assert pinned_state({}, gw) is gw.state  # the next request: the new one
    await gw.aclose()


# ---------------------------------------------------------------- ProviderSet lease
async def test_a_retired_set_closes_when_its_last_request_ends() -> None:
    a, b = Closable("a"), Closable("b")
    providers = ProviderSet({"a": a, "b": b}, "cfg1")
    providers.acquire()
    providers.acquire()
    providers.retire()
    await settle()
    assert (a.closed, b.closed) == (0, 0)  # two requests still use it
    providers.release()
    await settle()
    assert a.closed == 0
    providers.release()
    await settle()
    assert (a.closed, b.closed) == (1, 1)


async def test_an_idle_set_closes_when_retired_and_only_once() -> None:
    a = Closable("a")
    providers = ProviderSet({"a": a})
    providers.retire()
    await settle()
    providers.acquire()  # a request that pinned the state just before the swap
    providers.release()
    await settle()
    assert a.closed == 1


async def test_a_current_set_is_not_closed_when_its_requests_end() -> None:
    a = Closable("a")
    providers = ProviderSet({"a": a})
    providers.acquire()
    providers.release()
    await settle()
    assert a.closed == 0 and providers.in_flight == 0


async def test_a_closing_failure_does_not_stop_the_others() -> None:
    class Broken(Closable):
        async def aclose(self) -> None:
            raise RuntimeError("boom")

    b = Closable("b")
    await ProviderSet({"a": Broken("a"), "b": b}, "cfg").aclose()
    assert b.closed == 1


# ---------------------------------------------------------------- reload
async def test_reload_swaps_in_a_complete_state_in_one_assignment(tmp_path: Path) -> None:
    gw = gateway(tmp_path)
    old = gw.state
    seen: list[tuple[bool, set[str]]] = []

    def on_swap(new: GatewayState) -> None:  # runs right after the assignment: the state is whole
        seen.append((gw.state is new, set(new.routing.entries)))

    gw.on_swap.append(on_swap)
    old.providers.acquire()  # a request in flight on the old config
    (tmp_path / "gateway.yaml").write_text(CONFIG.replace("models: [echo]", "models: [echo, echo2]"))
    assert await gw.reload() is True
    assert seen == [(True, {"demo/echo", "demo/echo2"})]
    assert old.providers.retired and not gw.state.providers.retired
    assert set(old.routing.entries) == {"demo/echo"}  # the old state is never changed
    assert gw.in_flight() == 0  # the new config's count; the old request finishes on the old set
    old.providers.release()
    assert await gw.reload() is False  # same bytes: nothing to do
    assert gw.reloads == {"success": 2, "failure": 0}
    await gw.aclose()


async def test_a_broken_file_keeps_the_last_good_state(tmp_path: Path) -> None:
    gw = gateway(tmp_path)
    good = gw.state
    path = tmp_path / "gateway.yaml"
    for broken in ("version: 1\nkeys: [", CONFIG.replace("prefix: demo", "prefix: demo\n    bogus: 1"),
                   CONFIG.replace("type: echo", "type: nope")):
        path.write_text(broken)
        assert await gw.reload() is False
        assert gw.state is good and not good.providers.retired
        assert gw.last_failure is not None
    assert gw.reloads["failure"] == 3
    assert await gw.reload() is False and gw.reloads["failure"] == 3  # the same broken bytes: reported once
    path.write_text(CONFIG)  # the edit reverted: healed, nothing rebuilt
    assert await gw.reload() is False
    assert gw.last_failure is None and gw.state is good and gw.reloads["success"] == 2
    path.unlink()
    assert await gw.reload() is False and gw.state is good and gw.last_failure is not None
    await gw.aclose()
