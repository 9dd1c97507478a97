"""What-if experiments, not product code: run vte-proxy with an experiment patched in, to
measure it end to end before anyone changes vte_proxy/. The hot-path experiments behind
docs/performance.md (raw aiohttp upstream, SSE batched per read, the /v1 fast path) are now
part of vte_proxy/ and were removed from here (see git history); what is left is a template
for the next experiment. Patches (comma-separated first argument, the rest is the normal CLI):

  trim     a thread runs gc.collect() and glibc malloc_trim(0) every 5 s (memory experiment)
  census   a thread logs the live objects by type every 10 s (memory experiment)

    .venv/bin/python bench/whatif.py census serve --config gateway.yaml --port 8050
    .venv/bin/python bench/run.py --memory-only --gateway-cmd ".venv/bin/python bench/whatif.py trim"
"""

from __future__ import annotations

import sys
import time


def say(msg: str) -> None:
    print(f"whatif: {msg}", file=sys.stderr, flush=True)


# ---- trim: is memory kept after a burst of streams reclaimable?


def patch_trim() -> None:
    """Every 5 s, from a thread: gc.collect() and glibc's malloc_trim(0) (returns free heap
    pages to the OS). If RSS falls back after the streams with this, the memory kept without it
    was free-but-not-returned heap, not live objects."""
    import ctypes
    import gc
    import threading

    libc = ctypes.CDLL("libc.so.6")

    def loop() -> None:
        while True:
            time.sleep(5)
            gc.collect()
            libc.malloc_trim(0)

    threading.Thread(target=loop, name="whatif-trim", daemon=True).start()


def patch_census() -> None:
    """Every 10 s, from a thread: the number of live objects by type (top 12), to stderr
    (the gateway's log), to tell live objects from freed-but-kept memory."""
    import collections
    import gc
    import threading

    def loop() -> None:
        while True:
            time.sleep(10)
            counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
            top = ", ".join(f"{k} {v}" for k, v in counts.most_common(12))
            say(f"census: {sum(counts.values())} objects; {top}")

    threading.Thread(target=loop, name="whatif-census", daemon=True).start()


PATCHES = {"trim": patch_trim, "census": patch_census}


if __name__ == "__main__":
    names = [n for n in sys.argv[1].split(",") if n] if len(sys.argv) > 1 and sys.argv[1] != "serve" else []
    for name in names:
        PATCHES[name]()
    from vte_proxy.cli import main

    sys.exit(main(sys.argv[1 + bool(names):] if names else sys.argv[1:]))
