"""The figures of ``make bench``, one function per cell of the table (the neutral public board's
method: added latency at one connection, the throughput frontier, paced streams, memory).

Every function takes a running gateway (``gateways.Gateway``) and returns a plain dict for the
JSON file; a path the gateway cannot serve comes back as ``{"served": False, "evidence": ...}``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateways import CHAT, MESSAGES, Gateway, Target
from rig import HERE, Cores, Request, cpu_seconds, metered, request_file, rss_mib, say, wrk

BOUNDS_MS = (1.0, 5.0, 10.0, 50.0, None)  # None: unbounded
STREAM_STEPS = (10, 25, 50, 100, 200, 400, 700, 1000, 1500, 2000, 3000, 4000)


@dataclass
class Settings:
    """How long and how far each cell measures (``run.py``'s options)."""

    seconds: float = 4.0
    max_conns: int = 256
    stream_steps: tuple[int, ...] = STREAM_STEPS
    stream_probe_n: int = 20
    memory_minutes: float = 5.0
    memory_conns: int = 8
    memory_delay_ms: int = 10
    memory_streams: int = 50
    recover_s: float = 40.0


def get_path(d: Any, *path: str) -> Any:
    """d[path[0]][path[1]]..., or None where a step is missing."""
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def not_served(evidence: str) -> dict[str, Any]:
    return {"served": False, "evidence": evidence}


# ------------------------------------------------------------------ added latency at one connection


def added_latency(gw: Gateway, direct: Gateway, kind: str, body: dict[str, Any], cores: Cores, s: Settings,
                  work: Path) -> dict[str, Any]:
    """p50/p99 at one connection through the gateway minus the same request straight to the mock,
    measured back to back (mock, gateway, mock again; the mean of the two mock runs)."""
    target: Target = getattr(gw, kind)
    gfile = request_file(work, f"{gw.name}-{kind}", [target.request(body)])
    dfile = request_file(work, "direct-chat", [direct.chat.request(CHAT)])  # type: ignore[union-attr]
    before = wrk(direct.base, dfile, 1, s.seconds, cores)
    through = metered(gw.proc.pid if gw.proc else None, lambda: wrk(gw.base, gfile, 1, s.seconds, cores))
    after = wrk(direct.base, dfile, 1, s.seconds, cores)
    base = {q: (before[q] + after[q]) / 2 for q in ("p50_ms", "p99_ms")}
    return {"served": True, "gateway": through, "direct": base,
            "added_p50_ms": round(through["p50_ms"] - base["p50_ms"], 4),
            "added_p99_ms": round(through["p99_ms"] - base["p99_ms"], 4),
            "failures": through["failures"]}


# ------------------------------------------------------------------ throughput frontier


def frontier(gw: Gateway, requests: list[Request], cores: Cores, s: Settings, work: Path, tag: str = "chat"
             ) -> dict[str, Any]:
    """One sweep doubling concurrency (1, 2, 4, ... up to ``max_conns``); for each p99 bound the
    most req/s among the steps with p99 under it and no failure. The sweep stops at the first
    step with failures, or once req/s has not grown for two steps while p99 is past every bound."""
    reqfile = request_file(work, f"{gw.name}-{tag}", requests)
    steps: list[dict[str, Any]] = []
    conns, flat = 1, 0
    while conns <= s.max_conns:
        r = metered(gw.proc.pid if gw.proc else None, lambda c=conns: wrk(gw.base, reqfile, c, s.seconds, cores))
        steps.append(r)
        say(f"  {gw.name} {tag} c={conns}: {r['rps']:,.0f} req/s p99 {r['p99_ms']} ms, {r['failures']} failures")
        if r["failures"]:
            break
        best = max(x["rps"] for x in steps[:-1]) if len(steps) > 1 else 0.0
        flat = flat + 1 if r["rps"] < best * 1.05 else 0
        if flat >= 2 and (r["p99_ms"] or 0) > 50:
            break
        conns *= 2
    return {"served": True, "steps": steps, "bounds": bounds_of(steps), "at_best": best_step(steps)}


def bounds_of(steps: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for bound in BOUNDS_MS:
        ok = [x for x in steps if not x["failures"] and x["p99_ms"] is not None
              and (bound is None or x["p99_ms"] < bound)]
        top = max(ok, key=lambda x: x["rps"], default=None)
        out["unbounded" if bound is None else f"p99<{bound:g}ms"] = (
            {"rps": top["rps"], "conns": top["conns"], "p99_ms": top["p99_ms"]} if top else None)
    return out


def best_step(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [x for x in steps if not x["failures"]]
    return max(ok, key=lambda x: x["rps"], default=None)


# ------------------------------------------------------------------ paced streams


def wave(url: str, target: Target, n: int, cores: Cores, leader: int | None = None, ramp_ms: int = 1000
         ) -> dict[str, Any]:
    """One wave of ``n`` paced streams from streams.mjs (on the load core); with ``leader``, the
    gateway's CPU time per stream (its 67 frames, connection and request included)."""
    c0 = cpu_seconds(leader) if leader else 0.0
    cmd = ["node", str(HERE / "streams.mjs"), "wave", "--url", url, "--n", str(n), "--model", target.model,
           "--key", target.key, "--ramp-ms", str(ramp_ms)]
    for k, v in target.headers:
        cmd += ["--header", f"{k}: {v}"]
    out = subprocess.run(cores.pin(cmd, cores.load), capture_output=True, text=True, check=False, timeout=120)
    try:
        result = dict(json.loads(out.stdout.strip().splitlines()[-1]))
        if leader:
            result["gateway_cpu_us_per_stream"] = round((cpu_seconds(leader) - c0) / n * 1e6)
        return result
    except (IndexError, ValueError):
        return {"n": n, "pass": False, "failed": n, "reasons": {"rig error": n},
                "samples": [(out.stderr or out.stdout).strip()[-300:]]}


def stream_url(gw: Gateway) -> str:
    path = gw.paced.path  # type: ignore[union-attr]
    return path if path.startswith("http") else gw.base + path


def stream_overhead(gw: Gateway, direct: Gateway, cores: Cores, s: Settings) -> dict[str, Any]:
    """Added time to first token and added inter-frame gaps: a small wave through the gateway
    and the same wave straight at the paced upstream, back to back."""
    first = wave(stream_url(gw), gw.paced, 1, cores)  # type: ignore[arg-type]
    timing = {"a gap over 200 ms", "first token after 2000 ms"}  # a probe that is only slow is served
    if set(first.get("reasons", {})) - timing:
        return not_served(f"{(first.get('samples') or ['the probe stream failed'])[0]}"
                          + (f"; its log: {gw.log_error()}" if gw.log_error() else ""))
    d = wave(stream_url(direct), direct.paced, s.stream_probe_n, cores)  # type: ignore[arg-type]
    time.sleep(0.5)
    g = wave(stream_url(gw), gw.paced, s.stream_probe_n, cores, gw.proc.pid if gw.proc else None)  # type: ignore[arg-type]
    sub = {k: None if g.get(k) is None or d.get(k) is None else round(g[k] - d[k], 3)
           for k in ("ttft_p50_ms", "ttft_p99_ms", "gap_p50_ms", "gap_p99_ms")}
    return {"served": True, "n": s.stream_probe_n, "gateway": g, "direct": d,
            **{f"added_{k}": v for k, v in sub.items()}}


def sustained(url: str, target: Target, cores: Cores, s: Settings, label: str, leader: int | None = None
              ) -> dict[str, Any]:
    """Streams sustained: waves of growing N until one fails (0.1% or more of its streams: a gap
    over 200 ms, a first token after 2 s, a lost delta, an error); the figure is the last N
    that passed."""
    steps, top = [], 0
    for n in s.stream_steps:
        w = wave(url, target, n, cores, leader)
        steps.append(w)
        say(f"  {label} streams n={n}: {'pass' if w['pass'] else 'FAIL'} ({w['failed']} failed"
            f"{', ' + ', '.join(f'{k}: {v}' for k, v in w['reasons'].items()) if w['reasons'] else ''}; "
            f"first token p99 {w.get('ttft_p99_ms')} ms, gap p99 {w.get('gap_p99_ms')} ms, opened in "
            f"{w.get('opened_in_ms')} ms, gateway CPU {w.get('gateway_cpu_us_per_stream', '-')} us/stream)")
        if not w["pass"]:
            break
        top = n
        time.sleep(1.0)
    return {"sustained": top, "top_step_passed": bool(steps) and steps[-1]["pass"], "steps": steps,
            "failed_at": None if not steps or steps[-1]["pass"] else steps[-1]["n"]}


def profile_streams(gw: Gateway, n: int, cores: Cores, work: Path, waves: int = 3) -> dict[str, Any]:
    """py-spy (from the venv) on the gateway during ``waves`` waves of ``n`` paced streams:
    a ranked text summary and folded stacks in bench/profiles/ (see profile_summary.py)."""
    import shutil
    import sys

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists() or gw.proc is None:
        return {"error": "py-spy not installed (.venv/bin/pip install py-spy)"}
    raw = work / f"pyspy-streams-{n}.txt"
    secs = 5 * waves
    cmd = cores.pin([spy, "record", "-f", "raw", "-o", str(raw), "--pid", str(gw.proc.pid), "-d", str(secs),
                     "-r", "200", "--nonblocking"], cores.load)
    spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    results = [wave(stream_url(gw), gw.paced, n, cores, gw.proc.pid) for _ in range(waves)]  # type: ignore[arg-type]
    _, err = spy_proc.communicate(timeout=secs + 60)
    if not raw.exists():
        return {"error": err.decode(errors="replace")[-300:]}
    out_dir = HERE / "profiles"
    out_dir.mkdir(exist_ok=True)
    summary = out_dir / f"streams-{n}.txt"
    with open(summary, "w") as f:
        subprocess.run([sys.executable, str(HERE / "profile_summary.py"), str(raw), "--title",
                        f"vte-proxy, {waves} waves of {n} paced streams (64 deltas 20 ms apart): py-spy record -r 200",
                        "--folded", str(out_dir / f"streams-{n}.folded.txt")], stdout=f, check=False)
    return {"summary": str(summary), "waves": [{k: w.get(k) for k in ("n", "failed", "pass", "reasons",
                                                                      "gateway_cpu_us_per_stream")}
                                               for w in results]}


# ------------------------------------------------------------------ memory


def memory(gw: Gateway, requests: list[Request], cores: Cores, s: Settings, work: Path, idle: float,
           streams: bool) -> dict[str, Any]:
    """Idle RSS (before any request), RSS every 5 s under a fixed load for ``memory_minutes``: wrk
    at ``memory_conns`` connections each pausing ``memory_delay_ms`` between requests (at most
    800 req/s offered by default, about half of what one vte-proxy core serves) and, with
    ``streams``, waves of ``memory_streams`` paced streams one after the other; growth after
    warm-up (the first third, at most 60 s) as a
    least-squares slope in MiB/min, and the RSS ``recover_s`` after the load stops."""
    import threading

    assert gw.proc is not None
    reqfile = request_file(work, f"{gw.name}-memory", requests)
    seconds = s.memory_minutes * 60
    cmd = cores.pin(["wrk", "-t1", f"-c{s.memory_conns}", f"-d{seconds:g}s", "--timeout=5s", "-s",
                     str(HERE / "request.lua"), gw.base], cores.load)
    env = {"REQ_FILE": str(reqfile), "DELAY_MS": str(s.memory_delay_ms), "PATH": "/usr/bin"}
    load = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    waves: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def stream_load() -> None:
        while time.monotonic() - t0 < seconds - 3:
            waves.append(wave(stream_url(gw), gw.paced, s.memory_streams, cores))  # type: ignore[arg-type]

    streamer = threading.Thread(target=stream_load, daemon=True) if streams else None
    if streamer:
        streamer.start()
    samples = []
    while load.poll() is None:
        samples.append((round(time.monotonic() - t0, 1), round(rss_mib(gw.proc.pid), 2)))
        time.sleep(min(5.0, max(0.5, seconds / 60)))
    out = load.stdout.read() if load.stdout else ""
    if streamer:
        streamer.join()
    time.sleep(s.recover_s)
    warm = min(60.0, seconds / 3)
    after = [(t, v) for t, v in samples if t >= warm]
    steady = round(statistics.median(v for _, v in after), 2) if after else None
    return {"idle_mib": round(idle, 2), "steady_mib": steady,
            "growth_mib_per_min": round(slope(after) * 60, 3) if len(after) >= 3 else None,
            "recovered_mib": round(rss_mib(gw.proc.pid), 2), "peak_mib": max((v for _, v in samples), default=None),
            "minutes": s.memory_minutes, "warmup_s": warm, "conns": s.memory_conns, "delay_ms": s.memory_delay_ms,
            "recover_s": s.recover_s, "requests": _wrk_requests(out), "streams": sum(w["n"] for w in waves),
            "stream_failures": stream_reasons(waves), "failures": _wrk_failures(out) + sum(w["failed"] for w in waves),
            "samples": samples}


def stream_reasons(waves: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in waves:
        for k, v in w.get("reasons", {}).items():
            out[k] = out.get(k, 0) + v
    return out


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, v): units of v per unit of t."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / den if den else 0.0


def _wrk_failures(out: str) -> int:
    import re

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)


def _wrk_requests(out: str) -> int:
    import re

    m = re.search(r"(\d+) requests in", out)
    return int(m.group(1)) if m else 0


def chat_requests(gw: Gateway) -> list[Request]:
    return [gw.chat.request(CHAT)]  # type: ignore[union-attr]


def messages_requests(gw: Gateway) -> list[Request]:
    return [gw.messages.request(MESSAGES)]  # type: ignore[union-attr]
