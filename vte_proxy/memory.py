"""Giving memory back once a burst of traffic is over.

While requests flow, Python's cyclic garbage collector runs often enough on its own. When the
traffic stops, it does not run at all (it is driven by allocations), so the cycles left by the
last connections of a burst (aiohttp and asyncio objects that refer to each other) stay in
memory until the next busy period. :class:`MemoryWatcher` notices the quiet, collects
(again once the burst's pooled upstream connections are closed) and asks the C allocator to
return its free pages to the OS.

How much comes back depends on the allocator: Python's own (pymalloc) keeps each 1 MiB arena
while any object in it is alive, so the container image runs with jemalloc and
``PYTHONMALLOC=malloc`` (see docs/performance.md, "Memory").
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
from collections.abc import Callable

from vte_proxy.upstream import KEEPALIVE_TIMEOUT

log = logging.getLogger("vte_proxy.memory")

# Seconds without a request finishing (and none in flight) before the collection runs.
QUIET_SECONDS = 5.0
# Collections again, after the first, once the burst's idle upstream connections have left the
# pool: aiohttp closes them at its first cleanup round (every KEEPALIVE_TIMEOUT seconds) past
# their keep-alive, i.e. between one and two keep-alive periods after their last use.
AFTER_POOL_SECONDS = (KEEPALIVE_TIMEOUT + QUIET_SECONDS, 2 * KEEPALIVE_TIMEOUT + QUIET_SECONDS)


def _malloc_trim() -> Callable[[int], int] | None:
    # glibc only (musl has no malloc_trim); with jemalloc preloaded it trims glibc's own,
    # nearly empty heap, which is cheap and harmless.
    with contextlib.suppress(OSError, AttributeError):
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
        return trim
    return None


_TRIM = _malloc_trim()


def release_memory() -> int:
    """A full collection, then glibc's ``malloc_trim(0)``; returns the objects collected."""
    found = gc.collect()
    if _TRIM is not None:
        _TRIM(0)
    return found


# The cyclic collector's thresholds while serving (CPython's default: 700, 10, 10). A request
# allocates a few thousand objects, nearly all freed by reference counting as it ends; at 700 a
# young-generation pass ran several times per request, promoting the objects of the requests in
# flight, which the older passes then traversed again (docs/performance.md, "The hot path, issue 17").
SERVING_THRESHOLDS = (50_000, 20, 100)


def tune_collector() -> None:
    """For a serving process, once started: move everything alive at start-up (modules, the
    config, the app) out of the cyclic collector's reach, and collect less often. Full
    collections traverse every tracked object: with the startup heap in them each took tens of
    milliseconds in the middle of requests, which set the p99 under load. Frozen objects are
    still freed by reference counting; only cycles among them would stay (there are none
    to speak of: the startup state lives as long as the process)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_THRESHOLDS)


class MemoryWatcher:
    """Runs ``release`` when the gateway goes quiet after serving requests (no request finished
    during the last ``quiet`` seconds, none in flight), and again ``after_pool`` seconds later
    while it stays quiet (the burst's pooled upstream connections are closed by then). A busy
    or idle gateway is left alone. ``finished`` and ``in_flight`` are the app's own counters."""

    def __init__(self, finished: Callable[[], int], in_flight: Callable[[], int], quiet: float = QUIET_SECONDS,
                 release: Callable[[], int] = release_memory,
                 after_pool: tuple[float, ...] = AFTER_POOL_SECONDS,
                 on_start: Callable[[], None] | None = None) -> None:
        self.on_start = on_start  # called when run() starts, the app started (serving: tune_collector)
        self.finished = finished
        self.in_flight = in_flight
        self.quiet = quiet
        self.release = release
        self.after_pool = after_pool

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set."""
        if self.on_start is not None:
            self.on_start()
        loop = asyncio.get_running_loop()
        seen = released = self.finished()
        again: list[float] = []  # loop times of the follow-up collections still due
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.quiet)
                return
            now = self.finished()
            if now != seen:  # still busy: Python's own collector is running
                seen, again = now, []
                continue
            if self.in_flight():
                continue
            if now != released:
                released = now
                again = [loop.time() + delay for delay in self.after_pool]
            elif again and loop.time() >= again[0]:
                again.pop(0)
            else:
                continue
            found = self.release()
            log.debug("quiet after %d requests: collected %d objects, returned free memory", now, found)
