"""``make bench``: how fast vte-proxy is on this machine, against a zero-delay upstream.

Starts a zero-delay OpenAI upstream (nginx from Debian when installed, else the Python
fallback in ``mock_upstream.py``) and one vte-proxy process with everything on (client keys,
Prometheus metrics, the request log of the status page), drives both with wrk, and prints:
requests/s and p50/p99 latency at 1 and 32 connections, non-streaming and streaming (22
events), the latency added at one connection over the upstream alone, the gateway's CPU
seconds per 1,000 requests and its RSS. Then the memory run: N concurrent streams held open
(one event every 100 ms for 30 s, ``slow_upstream.py``), the gateway's peak RSS while they are
open and its RSS once they have ended.

The gateway runs pinned to one core (``taskset -c 1``); wrk, the upstream and this script
share the other (``-c 0``). Only 127.0.0.1 ports are used. wrk is required; when wrk or nginx
is missing and this runs as root, ``apt-get install -y nginx-light wrk`` is run (and said).

    .venv/bin/python bench/run.py [--seconds 8] [--skip-memory] [--streams 1000] [--json]
                                  [--log-level warning|info] [--profile]   (--help: all options)

See docs/performance.md for what each figure means and the figures of a reference machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEY = "sk-bench"
MODEL_NS = "bench/gpt-4o-mini"
MODEL_S = "benchs/gpt-4o-mini"
MODEL_SLOW = "slow/gpt-4o-mini"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHAT_BODY = {"messages": [{"role": "system", "content": "You are terse."},
                          {"role": "user", "content": "Say hello in five words."}], "max_tokens": 64}
# Issue 8's targets, as absolute figures (LiteLLM on the reference machine: ~160 and ~50 req/s).
TARGET_NS_RPS = 4000.0
TARGET_S_RPS = 2000.0
TARGET_ADDED_P50_MS = 0.35
TARGET_PEAK_RSS_MB = 150.0
TARGET_SETTLED_MB = 15.0  # "back near idle": within this much of the RSS before the streams


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# processes, ports, /proc


class Processes:
    """Everything this run started; all of it is stopped at the end, whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], log: Path, cpu: int | None, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        full = (["taskset", "-c", str(cpu)] if cpu is not None else []) + cmd
        with open(log, "wb") as out:
            p = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**os.environ, **(env or {})}, start_new_session=True, cwd=ROOT)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes], timeout: float = 20) -> None:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in reversed(list(self.procs)):
            self.stop(p)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, p: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if p.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise SystemExit(f"bench: {p.args!r} did not open port {port}\n{tail}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def core_user_seconds(cpu: int | None) -> float:
    """user + nice time of one core (or all cores), in seconds: to see what else ran there."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    for line in Path("/proc/stat").read_text().splitlines():
        parts = line.split()
        if parts[0] == name:
            return (int(parts[1]) + int(parts[2])) / CLK_TCK
    return 0.0


def busy_fraction(seconds: float = 1.0) -> float:
    """Share of all cores' time spent busy (not idle/iowait) over ``seconds``."""
    def sample() -> tuple[int, int]:
        parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(parts[:8]), parts[3] + parts[4]

    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


QUIET = {"max_wait": 0.0, "threshold": 0.1, "waited": 0.0, "gave_up": 0}


def wait_quiet() -> None:
    """With --wait-quiet: before a measured run, wait (up to the limit) until the machine is
    idle (other processes under 10% of all cores for two seconds in a row)."""
    if QUIET["max_wait"] <= 0:
        return
    deadline = time.monotonic() + QUIET["max_wait"]
    t0 = time.monotonic()
    calm = 0
    while calm < 2:
        if time.monotonic() > deadline:
            QUIET["gave_up"] += 1
            say("bench: the machine did not get quiet; measuring anyway")
            break
        calm = calm + 1 if busy_fraction() < QUIET["threshold"] else 0
    QUIET["waited"] += time.monotonic() - t0


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


# --------------------------------------------------------------------------------------------
# tools and upstreams


def ensure_tools(install: bool) -> bool:
    """wrk must be there; nginx and libjemalloc2 may be. Returns whether nginx is available."""
    missing = [t for t in ("wrk", "nginx") if not shutil.which(t)] + ([] if jemalloc_path() else ["libjemalloc2"])
    if missing and install and os.geteuid() == 0 and shutil.which("apt-get"):
        say(f"bench: {' and '.join(missing)} missing; installing Debian's packages: "
            "apt-get install -y nginx-light wrk libjemalloc2")
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk "
                       "libjemalloc2", shell=True, check=False, stdout=subprocess.DEVNULL)
    if not shutil.which("wrk"):
        raise SystemExit("bench: wrk is required and was not found. Install it (Debian/Ubuntu: "
                         "`apt-get install wrk`, macOS: `brew install wrk`) and run again.")
    if not shutil.which("nginx"):
        say("bench: nginx not found; using the built-in Python upstream (bench/mock_upstream.py)")
        return False
    return True


def sse_file(work: Path) -> bytes:
    sys.path.insert(0, str(HERE))
    from sse_body import COMPLETION, MODELS, sse_body

    body = sse_body()
    (work / "stream.sse").write_bytes(body)
    return COMPLETION + b"\0" + MODELS


def start_nginx(procs: Processes, work: Path, ports: dict[str, int], cpu: int | None) -> subprocess.Popen[bytes]:
    completion, models = sse_file(work).split(b"\0")
    conf = (HERE / "nginx-mock.conf").read_text()
    for k, v in {"@WORK@": str(work), "@JSON_PORT@": str(ports["json"]), "@SSE_PORT@": str(ports["sse"]),
                 "@PROXY_PORT@": str(ports["proxy"]), "@COMPLETION@": completion.decode(),
                 "@MODELS@": models.decode()}.items():
        conf = conf.replace(k, v)
    (work / "nginx.conf").write_text(conf)
    log = work / "nginx.out"
    p = procs.start(["nginx", "-p", str(work), "-e", str(work / "error.log"), "-c", str(work / "nginx.conf")],
                    log, cpu)
    for port in (ports["json"], ports["sse"], ports["proxy"]):
        wait_port(port, p, log)
    return p


def start_python_upstream(procs: Processes, work: Path, ports: dict[str, int], cpu: int | None
                          ) -> subprocess.Popen[bytes]:
    log = work / "mock_upstream.log"
    p = procs.start([sys.executable, str(HERE / "mock_upstream.py"), "--json-port", str(ports["json"]),
                     "--sse-port", str(ports["sse"])], log, cpu)
    for port in (ports["json"], ports["sse"]):
        wait_port(port, p, log)
    return p


# --------------------------------------------------------------------------------------------
# the gateway


def gateway_config(ports: dict[str, int], max_connections: int, max_concurrency: int) -> str:
    """Everything on: several client keys (one with a model allow-list), metrics, request log.
    One provider per upstream port: bench (JSON), benchs (SSE), slow (the memory run)."""
    providers = "".join(f"""
          - name: {name}
            type: openai
            base_url: http://127.0.0.1:{ports[port]}/v1
            api_key: sk-upstream-bench
            prefix: {name}
            models: [gpt-4o-mini]
            max_connections: {max_connections}""" for name, port in (("bench", "json"), ("benchs", "sse"),
                                                                      ("slow", "slow")))
    return textwrap.dedent(f"""\
        # written by bench/run.py
        version: 1
        stream_mode: auto
        keys:
          - name: bench
            key: {KEY}
            status: true
          - name: other
            key: sk-bench-other-key
            models: ["bench/*"]
          - name: hashed
            key_sha256: "{hashlib.sha256(b"sk-bench-hashed").hexdigest()}"
        providers:{providers}
        server:
          max_concurrency: {max_concurrency}
          shutdown_grace: 2s
        metrics: {{auth: false}}
        """)


GATEWAY_CMD: list[str] = []  # --gateway-cmd: another way to start the gateway (experiments)
ALLOCATOR_ENV: dict[str, str] = {}  # --allocator image: the container image's jemalloc settings


def jemalloc_path() -> str | None:
    found = sorted(Path("/usr/lib").glob("*/libjemalloc.so.2"))
    return str(found[0]) if found else None


def image_allocator_env() -> dict[str, str]:
    """The allocator environment of the Dockerfile's runtime stage, with LD_PRELOAD pointed at
    this machine's libjemalloc (the image links it to /usr/local/lib)."""
    env: dict[str, str] = {}
    for line in (HERE.parent / "Dockerfile").read_text().splitlines():
        for name in ("PYTHONMALLOC", "MALLOC_CONF"):
            m = re.search(rf"\b{name}=(\S+)", line)
            if m:
                env[name] = m.group(1)
    lib = jemalloc_path()
    if lib is None or set(env) != {"PYTHONMALLOC", "MALLOC_CONF"}:
        return {}
    return {**env, "LD_PRELOAD": lib}


def gateway_command() -> list[str]:
    if GATEWAY_CMD:
        return GATEWAY_CMD
    exe = Path(sys.executable).with_name("vte-proxy")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "vte_proxy"]


def start_gateway(procs: Processes, work: Path, port: int, config: str, cpu: int | None, log_level: str,
                  name: str) -> subprocess.Popen[bytes]:
    cfg = work / f"{name}.yaml"
    cfg.write_text(config)
    log = work / f"{name}.log"
    p = procs.start([*gateway_command(), "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)],
                    log, cpu, {"VTE_LOG_LEVEL": log_level, "VTE_LOG_FORMAT": "text", **ALLOCATOR_ENV})
    wait_port(port, p, log, 120)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200:
                break
        time.sleep(0.1)
    time.sleep(0.5)
    return p


def http(method: str, url: str, body: Any = None, key: str | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def verify_gateway(base: str) -> dict[str, Any]:
    """One request of each kind through the gateway, checked, before measuring it."""
    url = base + "/v1/chat/completions"
    status, raw = http("POST", url, {"model": MODEL_NS, **CHAT_BODY}, KEY)
    answer = json.loads(raw)
    if status != 200 or answer.get("model") != MODEL_NS or not answer.get("usage"):
        raise SystemExit(f"bench: the gateway answered a plain request wrongly: {status} {raw[:300]!r}")
    status, raw = http("POST", url, {"model": MODEL_S, "stream": True, **CHAT_BODY}, KEY)
    events = [e for e in raw.split(b"\n\n") if e.startswith(b"data: ")]
    if status != 200 or not events or events[-1] != b"data: [DONE]" or MODEL_S.encode() not in events[0]:
        raise SystemExit(f"bench: the gateway answered a stream wrongly: {status} {raw[:300]!r}")
    status, _ = http("POST", url, {"model": MODEL_NS, **CHAT_BODY}, "sk-wrong")
    if status != 401:
        raise SystemExit(f"bench: a wrong key was not refused ({status})")
    return {"stream_events": len(events)}


def gateway_books(base: str, expected_errors: int = 1) -> dict[str, Any]:
    """What the gateway itself counted: status-page totals and request log, metrics.
    ``errors`` leaves out the deliberate 401 of :func:`verify_gateway`."""
    _, raw = http("GET", base + "/status.json", key=KEY)
    snap = json.loads(raw)
    _, metrics = http("GET", base + "/metrics")
    by_code: dict[str, float] = {}
    for m in re.finditer(rb'^vte_requests_total\{([^}]*)\} ([0-9.e+]+)$', metrics, re.M):
        code = re.search(rb'code="(\d+)"', m.group(1))
        if code:
            by_code[code.group(1).decode()] = by_code.get(code.group(1).decode(), 0) + float(m.group(2))
    return {"requests": snap["totals"]["requests"], "errors": snap["totals"]["errors"] - expected_errors,
            "log_entries": len(snap["log"]), "metrics_by_code": by_code}


# --------------------------------------------------------------------------------------------
# wrk


def wrk(url: str, model: str, conns: int, seconds: float, stream: bool, cpu: int | None) -> dict[str, Any]:
    env = dict(os.environ, MODEL=model, KEY=KEY, STREAM="1" if stream else "0")
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency", "-s", str(HERE / "post.lua"), url]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise SystemExit(f"bench: wrk failed against {url}:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)

    def lat(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s|m)\b", out)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000}[unit]

    return {"conns": conns, "rps": float(m.group(1)), "p50_ms": lat("50"), "p99_ms": lat("99"),
            "requests": int(total.group(1)) if total else 0,
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0}


def measured(pid: int | None, gw_cpu: int | None, run: Any, repeat: int = 1) -> dict[str, Any]:
    """Run ``run()`` (a wrk run) ``repeat`` times and keep the best (highest req/s: the least
    disturbed on a shared machine), with the gateway's CPU use during it."""
    best: dict[str, Any] | None = None
    for _ in range(max(1, repeat)):
        r = measured_once(pid, gw_cpu, run)
        if best is None or r["rps"] > best["rps"]:
            best = r
    assert best is not None
    return best


def measured_once(pid: int | None, gw_cpu: int | None, run: Any) -> dict[str, Any]:
    wait_quiet()
    c0 = cpu_seconds(pid) if pid else 0.0
    u0 = core_user_seconds(gw_cpu)
    t0 = time.monotonic()
    r: dict[str, Any] = run()
    wall = time.monotonic() - t0
    if pid:
        used = cpu_seconds(pid) - c0
        r["cpu_s"] = round(used, 3)
        r["cpu_s_per_1k"] = round(used / r["requests"] * 1000, 4) if r["requests"] else None
        r["cpu_util"] = round(used / wall, 3)
        # user time on the gateway's core that was not the gateway's: another process interfering
        r["other_user_on_core"] = round(max(0.0, core_user_seconds(gw_cpu) - u0 - used) / wall, 3)
    return r


# --------------------------------------------------------------------------------------------
# memory run: N concurrent streams through the gateway, read to the end by an asyncio client


async def drive_streams(base: str, n: int, duration: float, pid: int, sample_every: float = 0.2
                        ) -> dict[str, Any]:
    import aiohttp

    url = base + "/v1/chat/completions"
    body = json.dumps({"model": MODEL_SLOW, "stream": True, **CHAT_BODY}).encode()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    st: dict[str, Any] = {"open": 0, "max_open": 0, "completed": 0, "events": 0, "errors": [],
                          "peak_rss_mb": 0.0, "rss_all_open_mb": None, "all_open_after_s": None}
    t0 = time.monotonic()

    async def one(session: aiohttp.ClientSession) -> None:
        counted = False
        try:
            async with session.post(url, data=body, headers=headers) as r:
                if r.status != 200:
                    st["errors"].append(f"HTTP {r.status}: {(await r.read())[:200]!r}")
                    return
                last, events = b"", 0
                async for line in r.content:
                    if line.startswith(b"data: "):
                        events += 1
                        last = line
                        if not counted:
                            counted = True
                            st["open"] += 1
                            st["max_open"] = max(st["max_open"], st["open"])
                st["events"] += events
                if last.rstrip() == b"data: [DONE]":
                    st["completed"] += 1
                else:
                    st["errors"].append(f"stream ended without [DONE] after {events} events: {last[:200]!r}")
        except Exception as exc:  # every failure is a reported error
            st["errors"].append(f"{exc.__class__.__name__}: {exc}")
        finally:
            if counted:
                st["open"] -= 1

    async def sample() -> None:
        while True:
            rss = rss_mb(pid)
            st["peak_rss_mb"] = max(st["peak_rss_mb"], rss)
            if st["rss_all_open_mb"] is None and st["open"] >= n:
                st["rss_all_open_mb"] = rss
                st["all_open_after_s"] = round(time.monotonic() - t0, 2)
            await asyncio.sleep(sample_every)

    timeout = aiohttp.ClientTimeout(total=duration + 120, sock_read=60)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(one(session) for _ in range(n)))
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    st["seconds"] = round(time.monotonic() - t0, 2)
    st["error_count"] = len(st["errors"])
    st["errors"] = st["errors"][:5]
    return st


def memory_run(args: argparse.Namespace, procs: Processes, work: Path, ports: dict[str, int],
               gw_cpu: int | None, load_cpu: int | None) -> dict[str, Any]:
    n = args.streams
    say(f"memory run: {n} streams, one event every {args.interval:g} s for {args.duration:g} s")
    slow_log = work / "slow_upstream.log"
    slow = procs.start([sys.executable, str(HERE / "slow_upstream.py"), "--port", str(ports["slow"]),
                        "--interval", str(args.interval), "--duration", str(args.duration)], slow_log, load_cpu)
    wait_port(ports["slow"], slow, slow_log)
    config = gateway_config(ports, max_connections=max(256, n + 64), max_concurrency=max(1000, n + 64))
    gw = start_gateway(procs, work, ports["gateway_mem"], config, gw_cpu, args.log_level, "gateway-memory")
    base = f"http://127.0.0.1:{ports['gateway_mem']}"
    try:
        verify_gateway(base)
        wrk(base + "/v1/chat/completions", MODEL_NS, 8, 1, False, load_cpu)  # warm-up
        wrk(base + "/v1/chat/completions", MODEL_S, 8, 1, True, load_cpu)
        time.sleep(1)
        idle = rss_mb(gw.pid)
        c0 = cpu_seconds(gw.pid)
        st = asyncio.run(drive_streams(base, n, args.duration, gw.pid))
        st["gateway_cpu_util"] = round((cpu_seconds(gw.pid) - c0) / st["seconds"], 3)
        st["hwm_rss_mb"] = rss_mb(gw.pid, "VmHWM")
        st["rss_end_mb"] = rss_mb(gw.pid)
        timeline = []  # RSS every 5 s while the gateway idles after the streams
        t_end = time.monotonic()
        while (waited := time.monotonic() - t_end) < args.settle:
            time.sleep(min(5.0, args.settle - waited))
            timeline.append((round(time.monotonic() - t_end, 1), rss_mb(gw.pid)))
        st["rss_after_timeline"] = timeline
        st["rss_settled_mb"] = rss_mb(gw.pid)
        st["rss_idle_mb"] = idle
        # More bursts in the same process: a leak grows with each, allocator high-water does not.
        st["more_bursts"] = []
        for _ in range(args.bursts - 1):
            again = asyncio.run(drive_streams(base, n, args.duration, gw.pid))
            time.sleep(args.settle)
            st["more_bursts"].append({"completed": again["completed"], "error_count": again["error_count"],
                                      "peak_rss_mb": again["peak_rss_mb"], "rss_settled_mb": rss_mb(gw.pid)})
        st["books"] = gateway_books(base)
    finally:
        procs.stop(gw)
        procs.stop(slow)
    st.update(streams=n, interval_s=args.interval, duration_s=args.duration, settle_s=args.settle)
    return st


# --------------------------------------------------------------------------------------------
# profiling (optional): py-spy during extra c=32 runs


def profile_runs(args: argparse.Namespace, pid: int, base: str, load_cpu: int | None) -> dict[str, str]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        say("bench: --profile needs py-spy (.venv/bin/pip install py-spy); skipped")
        return {}
    out_dir = Path(args.profile_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    conns = args.profile_conns
    for name, model, stream in ((f"nonstream-c{conns}", MODEL_NS, False), (f"stream-c{conns}", MODEL_S, True)):
        raw = Path(tempfile.gettempdir()) / f"vte-pyspy-{name}.txt"
        secs = max(4, int(args.seconds))
        # blocking sampling (full stacks; --nonblocking cuts many of them short), GIL holder only
        cmd = [spy, "record", "-f", "raw", "-o", str(raw), "--pid", str(pid), "-d", str(secs), "-r", "250", "--gil"]
        if load_cpu is not None:
            cmd = ["taskset", "-c", str(load_cpu), *cmd]
        say(f"profiling {name} with py-spy ({secs} s)")
        spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        wrk(base + "/v1/chat/completions", model, conns, secs + 1, stream, load_cpu)
        _, err = spy_proc.communicate(timeout=60)
        if not raw.exists():
            say(f"bench: py-spy failed: {err.decode(errors='replace')[-500:]}")
            continue
        summary = out_dir / f"{name}.txt"
        with open(summary, "w") as out:
            subprocess.run([sys.executable, str(HERE / "profile_summary.py"), str(raw), "--title",
                            f"vte-proxy {name}: py-spy record -r 250 --gil during wrk -c{conns}",
                            "--folded", str(out_dir / f"{name}.folded.txt")], stdout=out, check=False)
        files[name] = str(summary)
    return files


# --------------------------------------------------------------------------------------------
# report


def fmt_row(label: str, r: dict[str, Any], added: float | None = None) -> str:
    def f(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    errors = r["non2xx"] + r["socket_errors"]
    return (f"  {label:<26s}{r['conns']:>5d}{r['rps']:>11,.0f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}"
            f"{f(added, '9.3f'):>10s}{f(r.get('cpu_s_per_1k'), '9.3f'):>10s}{f(r.get('cpu_util'), '6.0%'):>7s}"
            f"{errors:>7d}" + ("  *" if r.get("other_user_on_core", 0) > 0.05 else ""))


def memory_report(mem: dict[str, Any] | None) -> list[str]:
    if not mem:
        return []
    ok = mem["completed"] == mem["streams"] and mem["error_count"] == 0
    all_open = mem["rss_all_open_mb"]
    timeline = ", ".join(f"{t:g} s: {v:.1f}" for t, v in mem.get("rss_after_timeline", []))
    return [
        f"Memory run: {mem['streams']} concurrent streams, one event every {mem['interval_s'] * 1000:.0f} ms for "
        f"{mem['duration_s']:g} s ({mem['seconds']:.1f} s wall)",
        f"  {mem['completed']}/{mem['streams']} completed with [DONE], {mem['error_count']} errors, "
        f"{mem['events']:,} events read; max open at once {mem['max_open']}; gateway books: "
        f"{mem['books']['requests']} requests, {mem['books']['errors']} errors"
        + ("" if ok else f"  FAILED: {mem['errors']}"),
        f"  RSS: idle {mem['rss_idle_mb']:.1f} MB, all open {'-' if all_open is None else f'{all_open:.1f}'} MB, "
        f"peak {mem['hwm_rss_mb']:.1f} MB, at the end {mem['rss_end_mb']:.1f} MB, {mem['settle_s']:g} s later "
        f"{mem['rss_settled_mb']:.1f} MB; gateway CPU {mem['gateway_cpu_util']:.0%} of a core while streaming",
        *([f"  RSS after the streams (MB): {timeline}"] if timeline else []),
        *(f"  burst {i}: {b['completed']}/{mem['streams']} completed, {b['error_count']} errors, peak "
          f"{b['peak_rss_mb']:.1f} MB, {mem['settle_s']:g} s later {b['rss_settled_mb']:.1f} MB"
          for i, b in enumerate(mem.get("more_bursts", []), start=2)),
    ]


def target(ok: bool) -> str:
    return "ok  " if ok else "MISS"


def report(res: dict[str, Any]) -> str:
    lines = []
    meta = res["meta"]
    best = f" (best of {meta['repeat']})" if meta.get("repeat", 1) > 1 else ""
    if meta.get("gateway_cmd"):
        lines.append(f"EXPERIMENT: gateway started as {meta['gateway_cmd']!r}")
    lines.append(f"vte-proxy {meta['version']} benchmark: wrk -t1, {meta['seconds']:g} s per run{best}; "
                 f"gateway pinned to CPU {meta['gateway_cpu']}, wrk + upstream on CPU {meta['load_cpu']}; "
                 f"upstream: {meta['upstream']}; log level {meta['log_level']}; keys + metrics + request log on; "
                 f"allocator: {meta.get('allocator', 'pymalloc')}")
    if "gateway" in res:
        lines.append(f"  {'':<26s}{'conns':>5s}{'req/s':>11s}{'p50 ms':>9s}{'p99 ms':>9s}{'added p50':>10s}"
                     f"{'CPU s/1k':>10s}{'CPU':>7s}{'errors':>7s}")
    up = res.get("upstream")
    for key, label in (("ns_c1", "upstream alone, non-stream"), ("ns_c32", "upstream alone, non-stream"),
                       ("s_c1", "upstream alone, stream"), ("s_c32", "upstream alone, stream")):
        if up:
            lines.append(fmt_row(label, up[key]))
    if up and "nginx" in res:
        for key in ("ns_c1", "ns_c32"):
            added = res["nginx"][key]["p50_ms"] - up[key]["p50_ms"] if key == "ns_c1" else None
            lines.append(fmt_row("nginx proxy_pass (floor)", res["nginx"][key], added))
    gw = res.get("gateway")
    if gw is None:
        return "\n".join(lines + memory_report(res.get("memory")))
    for key, label in (("ns_c1", "vte-proxy, non-stream"), ("ns_c32", "vte-proxy, non-stream"),
                       ("s_c1", "vte-proxy, stream (22 ev)"), ("s_c32", "vte-proxy, stream (22 ev)")):
        added = gw[key]["p50_ms"] - up[key]["p50_ms"] if key.endswith("c1") and up else None
        lines.append(fmt_row(label, gw[key], added))
    lines.append(f"  vte-proxy RSS: {gw['rss_start_mb']:.1f} MB after start, {gw['rss_after_mb']:.1f} MB after the runs"
                 f" (peak {gw['hwm_rss_mb']:.1f} MB); gateway's own books: {gw['books']['requests']} requests, "
                 f"{gw['books']['errors']} errors, {gw['books']['log_entries']} log entries, "
                 f"metrics by code {gw['books']['metrics_by_code']}")
    other = max(gw[k].get("other_user_on_core", 0) for k in ("ns_c1", "ns_c32", "s_c1", "s_c32"))
    if other > 0.05:
        lines.append(f"  * WARNING: other processes used up to {other:.0%} of the gateway's core during a run: "
                     "those figures are low; run again on a quiet machine (or with --wait-quiet 120 --repeat 3)")
    mem = res.get("memory")
    lines += memory_report(mem)
    lines.append("Targets of issue 8, as absolute figures of its reference machine (LiteLLM ~160 / ~50 req/s there); "
                 "on another machine the ratios against LiteLLM of compare.py decide:")
    added_ns = gw["ns_c1"]["p50_ms"] - (up["ns_c1"]["p50_ms"] if up else 0.0)
    errors = sum(gw[k]["non2xx"] + gw[k]["socket_errors"] for k in ("ns_c1", "ns_c32", "s_c1", "s_c32"))
    lines.append(f"  {target(gw['ns_c32']['rps'] >= TARGET_NS_RPS)} non-stream c32 {gw['ns_c32']['rps']:,.0f} req/s "
                 f"(>= {TARGET_NS_RPS:,.0f}, 25x LiteLLM's ~160)")
    lines.append(f"  {target(gw['s_c32']['rps'] >= TARGET_S_RPS)} stream c32 {gw['s_c32']['rps']:,.0f} req/s "
                 f"(>= {TARGET_S_RPS:,.0f}, 40x LiteLLM's ~50)")
    if up:
        lines.append(f"  {target(added_ns <= TARGET_ADDED_P50_MS)} added p50 at c1 {added_ns:.3f} ms "
                     f"(<= {TARGET_ADDED_P50_MS} ms)")
    if mem:
        lines.append(f"  {target(mem['hwm_rss_mb'] < TARGET_PEAK_RSS_MB)} peak RSS with {mem['streams']} streams "
                     f"{mem['hwm_rss_mb']:.1f} MB (< {TARGET_PEAK_RSS_MB:.0f} MB)")
        back = mem["rss_settled_mb"] - mem["rss_idle_mb"]
        lines.append(f"  {target(back <= TARGET_SETTLED_MB)} {mem['settle_s']:g} s after the streams "
                     f"{mem['rss_settled_mb']:.1f} MB, {back:+.1f} MB over idle (<= +{TARGET_SETTLED_MB:.0f} MB)")
        errors += mem["error_count"] + mem["streams"] - mem["completed"]
        errors += sum(b["error_count"] + mem["streams"] - b["completed"] for b in mem.get("more_bursts", []))
        errors += mem["books"]["errors"]
    errors += gw["books"]["errors"]
    lines.append(f"  {target(errors == 0)} errors: {errors}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------


def raise_fd_limit(streams: int) -> None:
    """The memory run needs ~2 descriptors per stream in the gateway (client + upstream side) and
    one per stream here and in the slow upstream; children inherit the raised soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * streams + 1024
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            say(f"bench: open-file limit {new} (hard limit) is low for {streams} streams; raise it (ulimit -n)")


def pick_cpus(args: argparse.Namespace) -> tuple[int | None, int | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or not shutil.which("taskset"):
        say("bench: fewer than 2 CPUs (or no taskset): nothing is pinned; the figures mix gateway and load")
        return None, None
    gw = args.gateway_cpu if args.gateway_cpu in cpus else cpus[1]
    load = args.load_cpu if args.load_cpu in cpus and args.load_cpu != gw else next(c for c in cpus if c != gw)
    os.sched_setaffinity(0, {load})  # this script and what it starts without taskset stay off the gateway's core
    return gw, load


def main() -> int:
    ap = argparse.ArgumentParser(description="vte-proxy benchmark (see docs/performance.md)")
    ap.add_argument("--seconds", type=float, default=8, help="length of each wrk run (default 8)")
    ap.add_argument("--skip-memory", action="store_true", help="skip the concurrent-streams memory run")
    ap.add_argument("--streams", type=int, default=1000, help="concurrent streams in the memory run (default 1000)")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between events in the memory run")
    ap.add_argument("--duration", type=float, default=30, help="length of each stream in the memory run (s)")
    ap.add_argument("--settle", type=float, default=70,
                    help="seconds to wait before the after-streams RSS (default 70: past the release of the "
                    "pooled upstream connections, 35-60 s after their last use)")
    ap.add_argument("--bursts", type=int, default=1, help="bursts of streams in the memory run (same process)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON (progress goes to stderr)")
    ap.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                    help="gateway log level; info logs one line per request (default warning)")
    ap.add_argument("--repeat", type=int, default=1, help="run each measurement N times, keep the best")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="before each run, wait up to SECONDS for the machine to be idle (shared machines)")
    ap.add_argument("--python-upstream", action="store_true", help="use the Python upstream even if nginx is here")
    ap.add_argument("--no-install", action="store_true", help="never apt-get install nginx/wrk/libjemalloc2")
    ap.add_argument("--profile", action="store_true",
                    help="also profile extra runs with py-spy (text summaries; see --profile-conns)")
    ap.add_argument("--profile-dir", default=str(HERE / "profiles"))
    ap.add_argument("--profile-conns", type=int, default=32, help="wrk connections during the profiled runs")
    ap.add_argument("--port-base", type=int, default=18100, help="ports used: base+1 .. base+41 on 127.0.0.1")
    ap.add_argument("--gateway-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "vte-bench"))
    ap.add_argument("--gateway-cmd", help="start the gateway with this command instead of vte-proxy "
                    "(it gets `serve --config ... --host ... --port ...`), e.g. an experiment in bench/")
    ap.add_argument("--gateway-only", action="store_true",
                    help="skip the upstream-alone and nginx rows (quick A/B runs; no added-latency figure)")
    ap.add_argument("--memory-only", action="store_true", help="only the concurrent-streams memory run")
    ap.add_argument("--allocator", choices=["image", "python"], default="image",
                    help="image: jemalloc with PYTHONMALLOC=malloc, as the container image runs (default, "
                    "when libjemalloc2 is installed); python: CPython's own pymalloc")
    ap.add_argument("--from-json", metavar="PATH", help="only print the table of an earlier --json result")
    args = ap.parse_args()
    if args.from_json:
        print(report(json.loads(Path(args.from_json).read_text())))
        return 0

    QUIET["max_wait"] = args.wait_quiet
    if args.gateway_cmd:
        GATEWAY_CMD.extend(shlex.split(args.gateway_cmd))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (finally below) on SIGTERM too
    b = args.port_base
    ports = {"json": b + 1, "sse": b + 2, "slow": b + 3, "proxy": b + 10, "gateway": b + 40, "gateway_mem": b + 41}
    busy = [p for p in ports.values() if port_open(p)]
    if busy:
        raise SystemExit(f"bench: ports {busy} are in use on 127.0.0.1; pick others with --port-base")
    have_nginx = ensure_tools(not args.no_install) and not args.python_upstream
    if args.allocator == "image":
        ALLOCATOR_ENV.update(image_allocator_env())
        if not ALLOCATOR_ENV:
            say("bench: libjemalloc2 not found; the gateway runs on CPython's own allocator (--allocator python)")
    gw_cpu, load_cpu = pick_cpus(args)
    raise_fd_limit(args.streams)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)  # nginx workers (user nobody) read the SSE file from here
    from vte_proxy import __version__

    res: dict[str, Any] = {"meta": {"version": __version__, "seconds": args.seconds, "gateway_cpu": gw_cpu,
                                    "load_cpu": load_cpu, "log_level": args.log_level, "cpus": os.cpu_count(),
                                    "python": sys.version.split()[0], "repeat": args.repeat,
                                    "gateway_cmd": args.gateway_cmd,
                                    "allocator": "jemalloc (as in the image)" if ALLOCATOR_ENV else "pymalloc"}}
    procs = Processes()
    try:
        if have_nginx:
            start_nginx(procs, work, ports, load_cpu)
            version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
            res["meta"]["upstream"] = version.split(":", 1)[-1].strip()
        else:
            sse_file(work)
            start_python_upstream(procs, work, ports, load_cpu)
            res["meta"]["upstream"] = "built-in Python (bench/mock_upstream.py)"
        s = args.seconds
        url = f"http://127.0.0.1:{ports['json']}/v1/chat/completions"
        surl = f"http://127.0.0.1:{ports['sse']}/v1/chat/completions"
        rep = args.repeat
        if not (args.gateway_only or args.memory_only):
            say("measuring the upstream alone")
            wrk(url, "x", 8, 1, False, load_cpu)
            res["upstream"] = {
                key: measured(None, None, lambda u=u, c=c, st=st: wrk(u, "x", c, s, st, load_cpu), rep)
                for key, u, c, st in (("ns_c1", url, 1, False), ("ns_c32", url, 32, False),
                                      ("s_c1", surl, 1, True), ("s_c32", surl, 32, True))}
        if have_nginx and not (args.gateway_only or args.memory_only):
            say("measuring nginx proxy_pass (the floor)")
            purl = f"http://127.0.0.1:{ports['proxy']}/v1/chat/completions"
            wrk(purl, "x", 8, 1, False, load_cpu)
            res["nginx"] = {key: measured(None, None, lambda c=c: wrk(purl, "x", c, s, False, load_cpu), rep)
                            for key, c in (("ns_c1", 1), ("ns_c32", 32))}
        if not args.memory_only:
            config = gateway_config(ports, max_connections=256, max_concurrency=1000)
            gw = start_gateway(procs, work, ports["gateway"], config, gw_cpu, args.log_level, "gateway")
            base = f"http://127.0.0.1:{ports['gateway']}"
            gurl = base + "/v1/chat/completions"
            verify_gateway(base)
            rss_start = rss_mb(gw.pid)
            say("measuring vte-proxy")
            wrk(gurl, MODEL_NS, 8, 2, False, load_cpu)  # warm-up
            wrk(gurl, MODEL_S, 8, 2, True, load_cpu)
            g: dict[str, Any] = {}
            for key, model, conns, stream in (("ns_c1", MODEL_NS, 1, False), ("ns_c32", MODEL_NS, 32, False),
                                              ("s_c1", MODEL_S, 1, True), ("s_c32", MODEL_S, 32, True)):
                g[key] = measured(gw.pid, gw_cpu, lambda m=model, c=conns, st=stream: wrk(gurl, m, c, s, st, load_cpu),
                                  rep)
            g["rss_start_mb"] = rss_start
            g["rss_after_mb"] = rss_mb(gw.pid)
            g["hwm_rss_mb"] = rss_mb(gw.pid, "VmHWM")
            g["books"] = gateway_books(base)
            res["gateway"] = g
            if args.profile:
                res["profiles"] = profile_runs(args, gw.pid, base, load_cpu)
            procs.stop(gw)
        if not args.skip_memory:
            res["memory"] = memory_run(args, procs, work, ports, gw_cpu, load_cpu)
    finally:
        procs.stop_all()
    res["meta"]["quiet_wait_s"] = round(QUIET["waited"], 1)
    res["meta"]["quiet_gave_up"] = QUIET["gave_up"]
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
