"""What-if experiments, not product code: run vte-proxy with an experiment patched in, to
measure it end to end before anyone changes vte_proxy/. The hot-path experiments behind
docs/performance.md (raw aiohttp upstream, SSE batched per read, the /v1 fast path) are now
part of vte_proxy/ and were removed from here (see git history); what is left is a template
for the next experiment. Patches (comma-separated first argument, the rest is the normal CLI):

  trim     a thread runs gc.collect() and glibc malloc_trim(0) every 5 s (memory experiment)
  census   a thread logs the live objects by type every 10 s (memory experiment)
  memmap   a thread logs resident memory by mapping (heap, anonymous, files) and pymalloc's
           arena figures every 10 s: which allocator holds what
  tracemalloc  the memory added since idle by file and line, every 10 s (slow: use ~300 streams)
  noshape  StreamWatcher.process only watches for the end of the stream: the most a faster
           shaping could save per stream (answers keep the upstream's model name: not a fix)

    .venv/bin/python bench/whatif.py census serve --config gateway.yaml --port 8050
    .venv/bin/python bench/run.py --gateways vte --gateway-cmd ".venv/bin/python bench/whatif.py trim"
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
        time.sleep(3)
        while True:
            counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
            top = ", ".join(f"{k} {v}" for k, v in counts.most_common(12))
            say(f"census: {sum(counts.values())} objects; {top}")
            time.sleep(10)

    threading.Thread(target=loop, name="whatif-census", daemon=True).start()


def patch_memmap() -> None:
    """Every 10 s, from a thread: resident memory by kind of mapping (glibc heap, anonymous
    mappings, shared libraries) and pymalloc's arena figures, to tell which allocator holds the
    memory kept after a burst."""
    import os
    import tempfile
    import threading

    def rollup() -> str:
        kinds: dict[str, int] = {}
        name = ""
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split()
                if "-" in head[0] and len(head) >= 5:
                    path = head[5] if len(head) > 5 else ""
                    name = ("heap" if path == "[heap]" else "anon" if not path
                            else "stack" if path.startswith("[stack") else "files")
                elif head[0] == "Rss:":
                    kinds[name] = kinds.get(name, 0) + int(head[1])
        return ", ".join(f"{k} {v / 1024:.1f} MB" for k, v in sorted(kinds.items()))

    def pymalloc() -> str:
        # _debugmallocstats writes to the C-level stderr: point fd 2 at a file meanwhile.
        with tempfile.TemporaryFile() as f:
            saved = os.dup(2)
            os.dup2(f.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            f.seek(0)
            text = f.read().decode(errors="replace")
        keep = [ln for ln in text.splitlines() if ln.startswith(("# arenas", "Total", "# bytes in"))]
        return "; ".join(" ".join(k.split()) for k in keep)

    def loop() -> None:
        time.sleep(3)  # one sample at idle, then every 10 s
        while True:
            say(f"memmap: {rollup()} | {pymalloc()}")
            time.sleep(10)

    threading.Thread(target=loop, name="whatif-memmap", daemon=True).start()


def patch_tracemalloc() -> None:
    """tracemalloc from the start; every 10 s the memory added since an idle snapshot (taken
    3 s in), by file and by line of the allocation (the experiment's own allocations left out),
    to find what each open stream holds."""
    import threading
    import tracemalloc

    tracemalloc.start(1)
    skip = [tracemalloc.Filter(False, f) for f in ("<frozen*", tracemalloc.__file__, __file__, "*/linecache.py")]

    def top(snap: tracemalloc.Snapshot, base: tracemalloc.Snapshot, key: str, n: int) -> list[str]:
        stats = snap.compare_to(base, key)
        return [f"  {st.size_diff / 1e3:+9.1f} KB {st.count_diff:+7d}  "
                f"{st.traceback[0].filename.rsplit('/', 2)[-2:]}:{st.traceback[0].lineno if key == 'lineno' else ''}"
                for st in stats[:n]]

    def loop() -> None:
        time.sleep(3)
        base = tracemalloc.take_snapshot().filter_traces(skip)
        while True:
            time.sleep(10)
            snap = tracemalloc.take_snapshot().filter_traces(skip)
            total = sum(s.size_diff for s in snap.compare_to(base, "filename"))
            say("\n".join([f"tracemalloc: {total / 1e6:+.2f} MB since idle", *top(snap, base, "filename", 15),
                           *top(snap, base, "lineno", 30)]))

    threading.Thread(target=loop, name="whatif-tracemalloc", daemon=True).start()


# ---- noshape: what the stream shaping costs at most (an upper bound, not a candidate change)


def patch_noshape() -> None:
    """StreamWatcher.process reduced to what ends a stream ([DONE], a finish): no model rename,
    no usage. The answers are then wrong (the upstream's model name); the CPU it saves per
    stream is the most any rewrite of the shaping could save."""
    from vte_proxy import shaping

    def process(self: shaping.StreamWatcher, ev: bytes) -> bytes | None:
        if ev == shaping.DONE:
            self.done = True
        elif not self.finished and b'"finish_reason":"' in ev:
            self.finished = True
        return ev

    shaping.StreamWatcher.process = process  # type: ignore[method-assign]
    say("noshape: StreamWatcher.process only watches for the end")


PATCHES = {"trim": patch_trim, "census": patch_census, "memmap": patch_memmap, "tracemalloc": patch_tracemalloc,
           "noshape": patch_noshape}


if __name__ == "__main__":
    names = [n for n in sys.argv[1].split(",") if n] if len(sys.argv) > 1 and sys.argv[1] != "serve" else []
    for name in names:
        PATCHES[name]()
    from vte_proxy.cli import main

    sys.exit(main(sys.argv[1 + bool(names):] if names else sys.argv[1:]))
