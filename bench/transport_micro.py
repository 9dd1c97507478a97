"""What the upstream client layer costs on its own: requests/s and CPU microseconds per request
of one Python process (pinned to one core, uvloop) that only calls a zero-delay upstream
(nginx, or the built-in Python mock, on the other core), with no server side at all.

Variants:
  aiohttp        raw ``aiohttp.ClientSession`` (the floor of a Python aiohttp client)
  httpx-aiohttp  ``httpx.AsyncClient`` with ``httpx_aiohttp.AiohttpTransport`` (what vte-proxy uses)
  vte-upstream   vte-proxy's own ``vte_proxy.upstream.Upstream`` (httpx-aiohttp plus its timeouts
                 and error mapping), i.e. exactly the gateway's upstream call
  httpx          plain ``httpx.AsyncClient`` (httpcore's pool), for reference

Each variant runs in a fresh process. Non-streaming: POST and read the JSON body; streaming:
POST and iterate the 22-event SSE body chunk by chunk, as the gateway does.

    .venv/bin/python bench/transport_micro.py [--seconds 5] [--concurrency 1 32] [--json]

A gateway at N requests/s on one core has 1e6/N microseconds of CPU per request for
everything (server parsing, routing, auth, metrics, upstream call): the upstream layer's own
share of that budget is what this measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VARIANTS = ("aiohttp", "httpx-aiohttp", "vte-upstream", "httpx")
BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "You are terse."},
                                                       {"role": "user", "content": "Say hello in five words."}],
                   "max_tokens": 64}).encode()
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream",
           "authorization": "Bearer sk-upstream-bench"}


async def client_loop(variant: str, url: str, stream: bool, concurrency: int, seconds: float) -> dict[str, Any]:
    """One variant, in this process: ``concurrency`` workers calling ``url`` for ``seconds``."""
    import aiohttp
    import httpx

    call: Any
    close: Any
    if variant == "aiohttp":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), auto_decompress=False)

        async def call() -> int:
            async with session.post(url, data=BODY, headers=HEADERS) as r:
                n = 0
                if stream:
                    async for chunk in r.content.iter_any():
                        n += len(chunk)
                else:
                    n = len(await r.read())
                return n

        close = session.close
    elif variant in ("httpx-aiohttp", "httpx"):
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=30)
        if variant == "httpx":
            client = httpx.AsyncClient(limits=limits, trust_env=False)
        else:
            from httpx_aiohttp import AiohttpTransport

            client = httpx.AsyncClient(transport=AiohttpTransport(limits=limits), trust_env=False)

        async def call() -> int:
            request = client.build_request("POST", url, headers=HEADERS, content=BODY)
            response = await client.send(request, stream=True)
            n = 0
            try:
                async for chunk in response.aiter_bytes():
                    n += len(chunk)
            finally:
                await response.aclose()
            return n

        close = client.aclose
    elif variant == "vte-upstream":
        from vte_proxy.config import ProviderConfig
        from vte_proxy.upstream import Upstream

        base = url.rsplit("/chat/completions", 1)[0]
        upstream = Upstream(ProviderConfig(name="bench", type="openai", base_url=base, api_key="sk-upstream-bench",
                                           models=("gpt-4o-mini",)))

        async def call() -> int:
            response = await upstream.send("POST", url, HEADERS, BODY)
            n = 0
            try:
                async for chunk in response.iter_bytes():
                    n += len(chunk)
            finally:
                await response.aclose()
            return n

        close = upstream.aclose
    else:
        raise SystemExit(f"unknown variant {variant}")

    for _ in range(200):  # warm-up: connections open, code paths hot
        await call()
    count = 0
    errors = 0
    stop_at = 0.0

    async def worker() -> None:
        nonlocal count, errors
        while time.monotonic() < stop_at:
            try:
                if await call() > 0:
                    count += 1
                else:
                    errors += 1
            except Exception:
                errors += 1

    cpu0, t0 = time.process_time(), time.monotonic()
    stop_at = t0 + seconds
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    await close()
    return {"variant": variant, "stream": stream, "concurrency": concurrency, "requests": count, "errors": errors,
            "rps": count / wall, "cpu_us_per_request": cpu / max(count, 1) * 1e6, "cpu_util": cpu / wall}


def child(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(client_loop(args.variant, args.url, args.stream, args.concurrency, args.seconds))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="run each variant N times, keep the best")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="before each run, wait up to SECONDS for the machine to be idle")
    ap.add_argument("--python-upstream", action="store_true", help="use the Python mock even if nginx is here")
    ap.add_argument("--port-base", type=int, default=18150)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    # internal: one measurement in this process
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        args.concurrency = args.concurrency[0]
        child(args)
        return 0

    sys.path.insert(0, str(HERE))
    import signal

    import run as bench

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the upstream (finally below) on SIGTERM too

    b = args.port_base
    ports = {"json": b + 1, "sse": b + 2, "proxy": b + 10}
    if any(bench.port_open(p) for p in ports.values()):
        raise SystemExit(f"transport_micro: ports {list(ports.values())} busy; pick others with --port-base")
    have_nginx = bench.ensure_tools(install=True) and not args.python_upstream
    bench.QUIET["max_wait"] = args.wait_quiet
    cpus = sorted(os.sched_getaffinity(0))
    pin = len(cpus) >= 2
    if pin:
        os.sched_setaffinity(0, {args.load_cpu})
    work = Path(tempfile.gettempdir()) / "vte-bench-micro"
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    procs = bench.Processes()
    results = []
    try:
        if have_nginx:
            bench.start_nginx(procs, work, ports, args.load_cpu if pin else None)
        else:
            bench.sse_file(work)
            bench.start_python_upstream(procs, work, ports, args.load_cpu if pin else None)
        for stream in (False, True):
            url = f"http://127.0.0.1:{ports['sse' if stream else 'json']}/v1/chat/completions"
            for conc in args.concurrency:
                for variant in args.variants:
                    cmd = [sys.executable, __file__, "--variant", variant, "--url", url, "--concurrency", str(conc),
                           "--seconds", str(args.seconds), *(["--stream"] if stream else [])]
                    if pin:
                        cmd = ["taskset", "-c", str(args.client_cpu), *cmd]
                    best: dict[str, Any] | None = None
                    for _ in range(max(1, args.repeat)):
                        bench.wait_quiet()
                        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
                        if out.returncode != 0:
                            raise SystemExit(f"transport_micro: {variant} failed:\n{out.stderr[-2000:]}")
                        one = json.loads(out.stdout.strip().splitlines()[-1])
                        if best is None or one["rps"] > best["rps"]:
                            best = one
                    assert best is not None
                    r = best
                    results.append(r)
                    print(f"  {'stream' if stream else 'json':6s} c={conc:<3d} {variant:14s} {r['rps']:9,.0f} req/s "
                          f"{r['cpu_us_per_request']:7.0f} us CPU/req  errors {r['errors']}", file=sys.stderr)
    finally:
        procs.stop_all()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"Upstream client layer alone, one process on one core, uvloop; upstream: "
          f"{'nginx' if have_nginx else 'built-in Python mock'}; {args.seconds:g} s per run, best of {args.repeat}")
    print(f"  {'mode':8s}{'conns':>6s}  {'variant':15s}{'req/s':>10s}{'CPU us/req':>12s}{'vs aiohttp':>12s}"
          f"{'errors':>8s}")
    for r in results:
        ref = next(x for x in results if x["variant"] == "aiohttp" and x["stream"] == r["stream"]
                   and x["concurrency"] == r["concurrency"]) if "aiohttp" in args.variants else r
        print(f"  {'stream' if r['stream'] else 'json':8s}{r['concurrency']:>6d}  {r['variant']:15s}{r['rps']:>10,.0f}"
              f"{r['cpu_us_per_request']:>12.0f}{r['cpu_us_per_request'] / ref['cpu_us_per_request']:>11.2f}x"
              f"{r['errors']:>8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
