"""Summarise a py-spy profile in collapsed-stack form (``py-spy record -f raw``) as text:
where the samples go by package/area (self and inclusive), by function (self and
inclusive), and the share of each vte_proxy function.

    py-spy record -f raw -o prof.txt --pid PID -d 10 -r 500 --nonblocking
    python bench/profile_summary.py prof.txt [--top 40]

"Self" is the share of samples whose innermost Python frame is in that function (time in C
extensions such as orjson, httptools or uvloop counts for the Python function that called
them, or, with ``--native``, for the native frame); "inclusive" is the share of samples in
which the function is anywhere on the stack.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")

# Frames every sample of the event-loop thread has at its root: not counted as an area's
# inclusive time; as the innermost frame they mean time inside uvloop's C code (socket I/O,
# syscalls, callback scheduling) with no Python callback running.
ROOTS = ("asyncio/runners.py", "uvicorn/server.py", "uvicorn/_compat.py", "vte_proxy/cli.py", "vte-proxy")
LOOP = "event loop itself (uvloop C code: socket I/O, syscalls, scheduling)"

# (area, substring of the file path), first match wins; order matters.
AREAS = [
    ("vte_proxy.server (HTTP protocol guard)", "vte_proxy/server.py"),
    ("vte_proxy.http (ASGI endpoint, stream_reply)", "vte_proxy/http.py"),
    ("vte_proxy.exchange/pipeline (dispatch)", "vte_proxy/exchange.py"),
    ("vte_proxy.pipeline", "vte_proxy/pipeline.py"),
    ("vte_proxy.shaping (pass-through)", "vte_proxy/shaping.py"),
    ("vte_proxy.stream_watcher (pass-through, StreamWatcher)", "vte_proxy/stream_watcher.py"),
    ("vte_proxy.sse (split, StreamWatcher)", "vte_proxy/sse.py"),
    ("vte_proxy.upstream (Upstream.send, iter_bytes)", "vte_proxy/upstream.py"),
    ("vte_proxy.providers (openai body/headers)", "vte_proxy/providers/"),
    ("vte_proxy.accounting (finish, usage)", "vte_proxy/accounting.py"),
    ("vte_proxy.metrics (child cache)", "vte_proxy/metrics.py"),
    ("vte_proxy.middleware (guard, CORS)", "vte_proxy/middleware.py"),
    ("vte_proxy.status (request log sink)", "vte_proxy/status.py"),
    ("vte_proxy.auth (key check)", "vte_proxy/auth.py"),
    ("vte_proxy (other)", "vte_proxy/"),
    ("bench/whatif.py replacements (direct front router, aiohttp Upstream, batched pass-through)", "whatif.py"),
    ("httpx-aiohttp transport", "httpx_aiohttp/"),
    ("httpx (client, request/response models)", "httpx/"),
    ("aiohttp (client, connector, streams)", "aiohttp/"),
    ("yarl/multidict (URLs, headers)", "yarl/"),
    ("yarl/multidict (URLs, headers)", "multidict/"),
    ("uvicorn (httptools protocol, ASGI send/receive)", "uvicorn/protocols/"),
    ("uvicorn (other)", "uvicorn/"),
    ("starlette (routing)", "starlette/"),
    ("prometheus_client", "prometheus_client/"),
    ("logging", "logging/"),
    ("asyncio (tasks, timeouts, streams)", "asyncio/"),
    ("contextlib", "contextlib.py"),
    ("typing/abc/dataclasses", "typing.py"),
    ("typing/abc/dataclasses", "abc.py"),
    ("anyio", "anyio/"),
    ("h11", "h11/"),
]


# Generic stdlib helpers: their self time is charged to the nearest caller outside them
# (e.g. re/ipaddress under httpx's URL parser, http.cookiejar/urllib under httpx's cookies).
HELPERS = ("re/", "ipaddress.py", "abc", "_weakrefset.py", "weakref.py", "contextlib.py", "typing.py", "email/",
           "_collections_abc", "<string>", "urllib/", "http/", "socket.py", "enum.py", "functools.py", "copy.py",
           "collections/", "dataclasses.py", "base64.py", "hmac.py", "hashlib.py", "fnmatch.py", "<attrs generated")


def is_helper(file: str) -> bool:
    return any(file.startswith(h) or (file.startswith("<") and h in file) for h in HELPERS)


def parse_frame(frame: str) -> tuple[str, str]:
    """(function label, file) of one collapsed frame."""
    m = FRAME.match(frame)
    if not m:
        return frame, ""
    return f"{m['func']} ({m['file']})", m["file"]


def is_root(file: str, label: str = "") -> bool:
    return label.startswith("<module> ") or any(file.endswith(r) or file == r for r in ROOTS)


def area_of(file: str, func: str) -> str:
    if is_root(file, func):
        return LOOP
    for area, needle in AREAS:
        if needle in file:
            return area
    if not file:
        return "native / interpreter: " + func.split(" ")[0][:40]
    return "other: " + file.rsplit("site-packages/", 1)[-1].split("/")[0]


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread ("))]
        if frames:
            stacks.append((frames, int(count)))
    return stacks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--title", default="")
    ap.add_argument("--folded", help="also write the stacks here, line numbers dropped and merged (smaller; "
                                     "flamegraph.pl or speedscope read it)")
    args = ap.parse_args()
    stacks = load(Path(args.path))
    if args.folded:
        merged: Counter[str] = Counter()
        for frames, count in stacks:
            kept = [re.sub(r":\d+\)$", ")", f) for f in frames
                    if not is_root(parse_frame(f)[1], parse_frame(f)[0])] or ["(loop)"]
            merged[";".join(kept)] += count
        lines, size = [], 0
        for k, v in merged.most_common():  # biggest stacks first, cut at ~60 KB
            line = f"{k} {v}\n"
            size += len(line)
            if size > 60_000:
                break
            lines.append(line)
        Path(args.folded).write_text("".join(lines))
    total = sum(c for _, c in stacks) or 1
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    self_area: Counter[str] = Counter()
    incl_area: Counter[str] = Counter()
    for frames, count in stacks:
        parsed = [parse_frame(f) for f in frames]
        leaf_label = parsed[-1][0]
        self_fn[leaf_label] += count
        owner = len(parsed) - 1
        while owner > 0 and is_helper(parsed[owner][1]):
            owner -= 1
        self_area[area_of(parsed[owner][1], parsed[owner][0])] += count
        for label in {label for label, file in parsed if not is_root(file, label)}:
            incl_fn[label] += count
        for a in {area_of(file, label) for label, file in parsed if not is_root(file, label)}:
            incl_area[a] += count

    def table(title: str, counter: Counter[str], top: int) -> list[str]:
        out = [title]
        for name, c in counter.most_common(top):
            out.append(f"  {100 * c / total:6.2f}%  {name}")
        return out

    out = [f"# {args.title or args.path}",
           f"# {total} samples (busy samples only: idle waits in the loop excluded; the event loop's root",
           "# frames are left out of the inclusive tables)", ""]
    out += [*table("## Self time by area (innermost frame; stdlib helpers such as re, abc, http.cookiejar "
                   "charged to their caller)", self_area, 40), ""]
    out += [*table("## Inclusive time by area (anywhere on the stack)", incl_area, 40), ""]
    out += [*table(f"## Self time by function (top {args.top})", self_fn, args.top), ""]
    out += [*table(f"## Inclusive time by function (top {args.top})", incl_fn, args.top), ""]
    ours = Counter({k: v for k, v in incl_fn.items() if "vte_proxy/" in k})
    out += table("## vte_proxy functions, inclusive", ours, 60)
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
