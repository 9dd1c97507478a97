"""Hot reload: watch the config's directory, and reload on SIGHUP.

The directory is watched, not the file: a Kubernetes ConfigMap update swaps the ``..data``
symlink to a new timestamped folder, and a watch on the file itself dies after the first
swap. Every event just asks :meth:`Gateway.reload`, which re-resolves the path and compares
content hashes, so unrelated files in the directory cost one read.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from watchfiles import awatch

from vte_proxy.state import Gateway

log = logging.getLogger("vte_proxy.reload")

# A safety net for file systems without inotify events (some network mounts).
POLL_SECONDS = 30.0


async def watch_config(gateway: Gateway, stop: asyncio.Event) -> None:
    directory = gateway.config_dir
    try:
        async for _changes in awatch(directory, stop_event=stop, debounce=200, step=50, recursive=True,
                                     poll_delay_ms=500):
            await gateway.reload()
    except Exception:  # the watcher must never take the gateway down; the poll still runs
        log.exception("watching %s failed; falling back to polling every %ss", directory, POLL_SECONDS)


async def poll_config(gateway: Gateway, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), POLL_SECONDS)
        except TimeoutError:
            await gateway.reload()


def install_sighup(gateway: Gateway, tasks: set[asyncio.Task[bool]]) -> None:
    """SIGHUP forces a reload (even of unchanged bytes)."""
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        task = loop.create_task(gateway.reload(force=True))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
        log.debug("SIGHUP reload not available in this process")
