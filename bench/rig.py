"""The rig of ``make bench``: processes pinned to cores, ports, /proc readings, wrk.

Everything here is generic (no gateway in particular); ``gateways.py`` says what runs, ``cells.py``
what is measured.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


@dataclass
class Cores:
    """Where things run: ``gateway`` for the gateway under test, ``load`` for wrk, the mocks and
    the stream client. ``None`` means unpinned (a machine with one core, or no taskset)."""

    gateway: int | str | None
    load: int | str | None

    def pin(self, cmd: list[str], cpu: int | str | None) -> list[str]:
        return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


def pick_cores(gateway: int, load: int) -> Cores:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or not shutil.which("taskset"):
        say("fewer than 2 CPUs (or no taskset): nothing is pinned; the figures mix gateway and load")
        return Cores(None, None)
    gw = gateway if gateway in cpus else cpus[-1]
    ld = load if load in cpus and load != gw else next(c for c in cpus if c != gw)
    os.sched_setaffinity(0, {ld})  # this script, and what it starts unpinned, stay off the gateway's core
    return Cores(gw, ld)


class Processes:
    """Everything this run started, each in its own session (process group); all of it is
    stopped at the end, whatever happens."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], log: str, env: dict[str, str] | None = None,
              cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        with open(self.work / log, "wb") as out:
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**os.environ, **(env or {})}, start_new_session=True, cwd=cwd)
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


def wait_port(port: int, p: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if p.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    raise RuntimeError(f"{' '.join(map(str, p.args))} did not open port {port}: {tail}")


# ------------------------------------------------------------------ /proc


def group_pids(leader: int) -> list[int]:
    """The processes of ``leader``'s process group (a gateway and its workers)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[2]) == leader:
                    pids.append(int(d.name))
    return pids


def cpu_seconds(leader: int) -> float:
    """utime + stime of a process group, in seconds (exited children are not counted)."""
    total = 0
    for pid in group_pids(leader):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_mib(leader: int) -> float:
    """Resident memory of a process group, MiB (statm's resident pages)."""
    total = 0
    for pid in group_pids(leader):
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return total * PAGE / 2**20


def load_1min() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def core_busy(cpu: int | None, seconds: float) -> float:
    """Share of one core (or of all cores) not idle over ``seconds``."""
    name = "cpu" if cpu is None else f"cpu{cpu}"

    def sample() -> tuple[int, int]:
        for line in Path("/proc/stat").read_text().splitlines():
            parts = line.split()
            if parts[0] == name:
                v = [int(x) for x in parts[1:9]]
                return sum(v), v[3] + v[4]
        return 1, 1

    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


# ------------------------------------------------------------------ HTTP probes


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return 0, f"{type(e).__name__}: {e}".encode()


# ------------------------------------------------------------------ wrk


@dataclass(frozen=True)
class Request:
    """One HTTP request as wrk sends it."""

    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


LUA = HERE / "request.lua"


def request_file(work: Path, name: str, requests: list[Request]) -> Path:
    """The file request.lua reads: per request a path line, header lines, a blank line, the
    body on one line; requests separated by a line with a single ``%``."""
    blocks = []
    for r in requests:
        head = "".join(f"{k}: {v}\n" for k, v in (("Content-Type", "application/json"), *r.headers))
        blocks.append(f"{r.path}\n{head}\n{r.body.decode()}\n")
    path = work / f"req-{name}.txt"
    path.write_text("%\n".join(blocks))
    return path


def wrk(base: str, reqfile: Path, conns: int, seconds: float, cores: Cores, timeout_s: float = 2.0
        ) -> dict[str, Any]:
    """One wrk run: one thread, ``conns`` keep-alive connections, latency percentiles."""
    cmd = cores.pin(["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", f"--timeout={timeout_s:g}s", "--latency",
                     "-s", str(LUA), base], cores.load)
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "REQ_FILE": str(reqfile)},
                         check=False).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise RuntimeError(f"wrk failed against {base}: {out[-800:]}")
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failures = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    return {"conns": conns, "rps": float(rps.group(1)), "requests": int(total.group(1)) if total else 0,
            "p50_ms": _latency(out, "50"), "p99_ms": _latency(out, "99"), "failures": failures,
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": sock.group(0) if sock else ""}


def _latency(out: str, p: str) -> float | None:
    m = re.search(rf"^\s+{p}(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000}[unit]


def metered(leader: int | None, run: Any) -> dict[str, Any]:
    """``run()`` (a wrk run) with the gateway group's CPU time during it: microseconds of CPU
    per completed request and the share of a core it used."""
    c0 = cpu_seconds(leader) if leader else 0.0
    t0 = time.monotonic()
    r: dict[str, Any] = run()
    wall = time.monotonic() - t0
    if leader:
        used = cpu_seconds(leader) - c0
        r["cpu_us_per_req"] = round(used / r["requests"] * 1e6, 1) if r["requests"] else None
        r["cpu_util"] = round(used / wall, 3)
    return r


def workdir(path: str | None) -> Path:
    work = Path(path or Path(tempfile.gettempdir()) / "vte-bench")
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)  # nginx workers (user nobody) read the SSE file from here
    return work
