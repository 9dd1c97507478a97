"""Memory given back after bursts: when it runs (quiet, nothing in flight, once per burst)
and what it does (collects cycles), plus the running gateway doing it after real requests."""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.support import CLIENT_KEY, ECHO_CONFIG, serve_app_in_thread
from vte_proxy.app import create_app
from vte_proxy.memory import MemoryWatcher, release_memory

QUIET = 0.05


class Requests:
    """The app's finished-requests counter, as the watcher reads it."""

    finished = 0


def burst(n: int = 3) -> None:
    Requests.finished += n


async def until(predicate: Callable[[], bool], within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(QUIET / 5)
    return predicate()


class Probe:
    def __init__(self) -> None:
        self.calls = 0
        self.in_flight = 0

    def release(self) -> int:
        self.calls += 1
        return 0


async def run_with(probe: Probe, body: Callable[[], Awaitable[None]], after_pool: tuple[float, ...] = ()) -> None:
    stop = asyncio.Event()
    watcher = MemoryWatcher(lambda: Requests.finished, lambda: probe.in_flight, QUIET, probe.release, after_pool)
    task = asyncio.create_task(watcher.run(stop))
    await asyncio.sleep(0)  # it has started (and counted the requests so far)
    try:
        await body()
    finally:
        stop.set()
        await asyncio.wait_for(task, 1)


async def test_releases_once_when_traffic_stops() -> None:
    probe = Probe()

    async def body() -> None:
        burst()
        assert await until(lambda: probe.calls == 1)
        await asyncio.sleep(QUIET * 6)
        assert probe.calls == 1  # no new traffic, nothing more to give back
        burst()
        assert await until(lambda: probe.calls == 2)

    await run_with(probe, body)


async def test_releases_again_once_pooled_connections_have_expired() -> None:
    probe = Probe()

    async def body() -> None:
        burst()
        assert await until(lambda: probe.calls == 1)
        assert await until(lambda: probe.calls == 2)  # after_pool[0] later, still quiet
        assert await until(lambda: probe.calls == 3)  # after_pool[1]
        await asyncio.sleep(QUIET * 12)
        assert probe.calls == 3  # and that is all until traffic comes back

    await run_with(probe, body, after_pool=(QUIET * 4, QUIET * 8))


async def test_new_traffic_cancels_the_follow_ups() -> None:
    probe = Probe()

    async def body() -> None:
        burst()
        assert await until(lambda: probe.calls == 1)
        burst()  # traffic again before the follow-up: the next quiet starts a new round
        assert await until(lambda: probe.calls == 2)
        await asyncio.sleep(QUIET * 20)
        assert probe.calls == 3  # the second round's follow-up only; the first round's was dropped

    await run_with(probe, body, after_pool=(QUIET * 6,))


async def test_leaves_an_idle_gateway_alone() -> None:
    probe = Probe()

    async def body() -> None:
        await asyncio.sleep(QUIET * 6)
        assert probe.calls == 0

    await run_with(probe, body)


async def test_waits_for_requests_in_flight() -> None:
    probe = Probe()
    probe.in_flight = 2  # long streams: nothing finishes, but the gateway is not quiet

    async def body() -> None:
        burst()
        await asyncio.sleep(QUIET * 6)
        assert probe.calls == 0
        probe.in_flight = 0
        assert await until(lambda: probe.calls == 1)

    await run_with(probe, body)


async def test_never_runs_while_requests_keep_finishing() -> None:
    probe = Probe()

    async def body() -> None:
        for _ in range(20):
            burst(1)
            await asyncio.sleep(QUIET / 4)
        assert probe.calls == 0
        assert await until(lambda: probe.calls == 1)

    await run_with(probe, body)


async def test_stops_when_told() -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(MemoryWatcher(lambda: 0, lambda: 0, 3600).run(stop))
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(task, 1)  # does not wait out its hour


def test_release_memory_collects_unreachable_cycles() -> None:
    class Node:
        other: object

    a, b = Node(), Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    gc.disable()  # only release_memory may collect the cycle
    try:
        del a, b
        assert alive() is not None
        assert release_memory() >= 2
        assert alive() is None
    finally:
        gc.enable()


def test_gateway_gives_memory_back_after_real_requests(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(ECHO_CONFIG)
    caplog.set_level(logging.DEBUG, logger="vte_proxy.memory")
    with serve_app_in_thread(create_app(str(config), quiet_seconds=0.2), lifespan="on") as server:
        body = {"model": "demo/echo", "messages": [{"role": "user", "content": "hello there"}]}
        with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as client:
            assert client.post("/v1/chat/completions", json=body).status_code == 200
            with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                assert b"[DONE]" in r.read()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any("quiet after" in r.message for r in caplog.records):
            time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "vte_proxy.memory"]
    assert len(lines) == 1, lines
    assert "collected" in lines[0]


def test_a_serving_process_freezes_its_startup_heap_and_collects_less_often() -> None:
    code = ("import gc; from vte_proxy.memory import SERVING_THRESHOLDS, tune_collector; tune_collector(); "
            "print(gc.get_threshold() == SERVING_THRESHOLDS, gc.get_freeze_count() > 10_000)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.split() == ["True", "True"], out.stderr


async def test_the_watcher_calls_its_start_hook_once_when_it_starts() -> None:
    started: list[int] = []
    stop = asyncio.Event()
    stop.set()
    await MemoryWatcher(lambda: 0, lambda: 0, 3600, on_start=lambda: started.append(1)).run(stop)
    await MemoryWatcher(lambda: 0, lambda: 0, 3600).run(stop)
    assert started == [1]
