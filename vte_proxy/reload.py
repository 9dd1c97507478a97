"""Hot reload: watch the config's directory, and reload on SIGHUP.

The directory is watched, not the file: a Kubernetes ConfigMap update swaps the ``..data``
symlink to a new timestamped folder, and a watch on the file itself dies after the first
swap. Every relevant event just asks :meth:`Gateway.reload`, which re-resolves the path and
compares content hashes, so a burst of events costs one read. A slow poll backs the watch up
(file systems without inotify events, a config symlinked from elsewhere).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from watchfiles import Change, awatch

from vte_proxy.state import Gateway

log = logging.getLogger("vte_proxy.reload")

# A safety net for file systems without inotify events (some network mounts).
POLL_SECONDS = 30.0


def relevant_names(config_path: str) -> Callable[[Change, str], bool]:
    """A watch filter: events on the config file, on kubelet's ``..data``/``..<timestamp>``
    entries, or on the first hop of a relative symlink the config goes through. Other files
    in the directory (logs, editor swap files) do not wake the reloader."""
    path = Path(config_path)

    def accept(_change: Change, changed: str) -> bool:
        name = os.path.basename(changed)
        if name == path.name or name.startswith(".."):
            return True
        try:
            target = os.readlink(path)
        except OSError:
            return False
        return not os.path.isabs(target) and Path(target).parts[:1] == (name,)

    return accept


async def watch_config(gateway: Gateway, stop: asyncio.Event) -> None:
    directory = gateway.config_dir
    try:
        # Not recursive: kubelet's swap shows up as entries of the directory itself, and a
        # config in a project root must not put the whole tree (.git, .venv) under watch.
        async for _changes in awatch(directory, stop_event=stop, debounce=200, step=50, recursive=False,
                                     watch_filter=relevant_names(gateway.config_path)):
            await _reload(gateway)
    except Exception:  # the watcher must never take the gateway down; the poll still runs
        log.exception("watching %s failed; falling back to polling every %ss", directory, POLL_SECONDS)


async def poll_config(gateway: Gateway, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), POLL_SECONDS)
        except TimeoutError:
            await _reload(gateway)


async def _reload(gateway: Gateway, force: bool = False) -> bool:
    try:
        return await gateway.reload(force)
    except Exception:  # Gateway.reload reports config problems itself; this is a bug guard
        log.exception("reloading %s failed unexpectedly", gateway.config_path)
        return False


def install_sighup(gateway: Gateway, tasks: set[asyncio.Task[bool]]) -> None:
    """SIGHUP forces a reload (even of unchanged bytes)."""
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        log.warning("SIGHUP: reloading %s", gateway.config_path)
        task = loop.create_task(_reload(gateway, force=True))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        log.debug("SIGHUP reload not available in this process")
