"""``make bench``: vte-proxy and its peers measured side by side, in one run, by the neutral public
board's method (see docs/performance.md and bench/README.md).

Gateways: nginx ``proxy_pass`` (the floor), uvicorn + aiohttp alone (the Python floor: the stack
vte-proxy is built on, none of its code), vte-proxy, LiteLLM proxy (one worker) and Portkey's
gateway (Node), each alone on the gateway core; wrk, the mock upstreams and the stream client on
the load core. Cells: added p50/p99 at one connection; the throughput frontier (req/s at p99
under 1, 5, 10, 50 ms and unbounded, no failures); paced streams (added first-token time and
inter-frame gaps, streams sustained); memory (idle, steady under load, growth in MiB/min,
recovered); CPU microseconds per request; Anthropic's ``POST /v1/messages`` translated to an
OpenAI-type upstream; ``--workers 2`` against one worker. The rig's own ceilings are measured
straight at the mocks. Output: a table on stdout, every figure in a JSON file, the frontier chart
as a PNG.

    .venv/bin/python bench/run.py                       # everything (~35 min with 5-minute memory runs)
    .venv/bin/python bench/run.py --smoke               # every cell, tiny durations (~5 min): the harness works
    .venv/bin/python bench/run.py --gateways vte,portkey --skip memory,scaling
    .venv/bin/python bench/run.py --from-json bench/results/latest.json   # the table (and chart) again
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cells
import gateways as gws
import report
from rig import HERE, Cores, Processes, load_1min, pick_cores, rss_mib, say, workdir, wrk

ALL = ("nginx", "asgi", "vte", "litellm", "portkey")
SECTIONS = ("latency", "frontier", "streams", "messages", "memory", "scaling")


def options() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="vte-proxy and its peers, side by side (docs/performance.md)")
    ap.add_argument("--gateways", default=",".join(ALL), help=f"which of {','.join(ALL)} (default: all)")
    ap.add_argument("--skip", default="", help=f"sections to leave out: {','.join(SECTIONS)}")
    ap.add_argument("--seconds", type=float, default=4, help="length of each wrk run (default 4)")
    ap.add_argument("--max-conns", type=int, default=256, help="top of the concurrency sweep (default 256)")
    ap.add_argument("--stream-steps", default=",".join(map(str, cells.STREAM_STEPS)),
                    help="concurrent-stream steps of the streams-sustained sweep")
    ap.add_argument("--memory-minutes", type=float, default=5, help="length of each memory load (default 5)")
    ap.add_argument("--memory-gateways", default="vte,litellm,portkey",
                    help="gateways given the memory run (default vte,litellm,portkey)")
    ap.add_argument("--recover", type=float, default=40, help="seconds after the memory load before the "
                    "recovered RSS (default 40: vte-proxy collects 5 s and 35 s after traffic stops)")
    ap.add_argument("--smoke", action="store_true", help="tiny durations: checks the harness, not a figure")
    ap.add_argument("--json", default=str(HERE / "results" / "latest.json"), help="where the JSON goes")
    ap.add_argument("--chart", default=str(HERE / "results" / "frontier.png"), help="where the PNG goes")
    ap.add_argument("--from-json", metavar="PATH", help="only print the table (and draw the chart) of a JSON file")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (README, docs)")
    ap.add_argument("--port-base", type=int, default=18100)
    ap.add_argument("--gateway-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--gateway-cmd", help="start vte-proxy with this command (it gets `serve --config ...`): "
                    "an experiment, e.g. '.venv/bin/python bench/whatif.py trim'")
    ap.add_argument("--profile-streams", type=int, default=0, metavar="N",
                    help="also record vte-proxy with py-spy during waves of N paced streams (bench/profiles/)")
    ap.add_argument("--no-install", action="store_true", help="never apt-get/npm/pip install anything")
    return ap.parse_args()


def settings(args: argparse.Namespace) -> cells.Settings:
    s = cells.Settings(seconds=args.seconds, max_conns=args.max_conns,
                       stream_steps=tuple(int(x) for x in args.stream_steps.split(",") if x),
                       memory_minutes=args.memory_minutes, recover_s=args.recover)
    if args.smoke:
        s.seconds, s.max_conns, s.stream_probe_n = 1, 16, 5
        s.stream_steps, s.memory_minutes, s.recover_s = (10, 50), 0.25, 3
    return s


def raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))


# ------------------------------------------------------------------ one gateway


def measure(gw: gws.Gateway, direct: gws.Gateway, procs: Processes, cores: Cores, s: cells.Settings,
            skip: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"label": gw.label, "version": gw.version, "load_1min_before": load_1min()}
    try:
        gw.start(procs)
    except Exception as exc:  # a peer that cannot start is shown with why, never dropped
        say(f"{gw.label} did not start: {exc}")
        return {**out, "started": False, "evidence": str(exc)[:500]}
    try:
        time.sleep(1.0)
        out["rss_start_mib"] = round(rss_mib(gw.proc.pid), 2) if gw.proc else None
        measure_chat(gw, direct, cores, s, skip, out)
        measure_messages(gw, direct, cores, s, skip, out)
        if "streams" not in skip:
            measure_streams(gw, direct, cores, s, out)
        if PROFILE_STREAMS and gw.name == "vte" and gw.paced is not None:
            out["profile"] = cells.profile_streams(gw, PROFILE_STREAMS[0], cores, procs_work())
        out["rss_end_mib"] = round(rss_mib(gw.proc.pid), 2) if gw.proc else None
        out["log_errors"] = gw.log_error()
    finally:
        gw.stop(procs)
    return out


def measure_chat(gw: gws.Gateway, direct: gws.Gateway, cores: Cores, s: cells.Settings, skip: set[str],
                 out: dict[str, Any]) -> None:
    err = gws.probe(gw, "chat", gws.CHAT)
    if err:
        out["latency"] = out["frontier"] = cells.not_served(err)
        return
    say(f"{gw.label}: warm-up {gw.warmup_s:g} s")
    wrk(gw.base, cells.request_file(procs_work(), f"{gw.name}-warm", cells.chat_requests(gw)), 8, gw.warmup_s, cores)
    if "latency" not in skip:
        say(f"{gw.label}: added latency at one connection")
        out["latency"] = cells.added_latency(gw, direct, "chat", gws.CHAT, cores, s, procs_work())
    if "frontier" not in skip:
        say(f"{gw.label}: throughput frontier")
        out["frontier"] = cells.frontier(gw, cells.chat_requests(gw), cores, s, procs_work())


def measure_messages(gw: gws.Gateway, direct: gws.Gateway, cores: Cores, s: cells.Settings, skip: set[str],
                     out: dict[str, Any]) -> None:
    if "messages" in skip:
        return
    err = gws.probe(gw, "messages", gws.MESSAGES)
    if err:
        out["messages"] = cells.not_served(err)
        return
    say(f"{gw.label}: POST /v1/messages (translated to an OpenAI-type upstream)")
    lat = cells.added_latency(gw, direct, "messages", gws.MESSAGES, cores, s, procs_work())
    front = cells.frontier(gw, cells.messages_requests(gw), cores, s, procs_work(), "messages")
    out["messages"] = {"served": True, "latency": lat, "frontier": front}


def measure_streams(gw: gws.Gateway, direct: gws.Gateway, cores: Cores, s: cells.Settings,
                    out: dict[str, Any]) -> None:
    if gw.paced is None:
        out["streams"] = cells.not_served(gw.absent.get("paced", "no streaming path"))
        return
    say(f"{gw.label}: paced streams")
    over = cells.stream_overhead(gw, direct, cores, s)
    out["streams"] = over
    if over["served"]:
        over["sustained"] = cells.sustained(cells.stream_url(gw), gw.paced, cores, s, gw.label,
                                            gw.proc.pid if gw.proc else None)


WORK: list[Path] = []
PROFILE_STREAMS: list[int] = []


def procs_work() -> Path:
    return WORK[0]


# ------------------------------------------------------------------ scaling and memory


def scaling(ports: gws.Ports, features: set[str], procs: Processes, s: cells.Settings, gateway_cmd: list[str] | None
            ) -> dict[str, Any]:
    """One worker against ``--workers 2``, both free to use both cores, and so are wrk and the
    stream client (a 2-core machine has no third core for the load): the same c=64 wrk run and
    the same streams-sustained sweep (from 100 streams up) against each."""
    both = Cores("0,1", "0,1")
    out: dict[str, Any] = {"note": "gateway, wrk and stream client all unpinned on cores 0,1; wrk -c64"}
    steps = cells.Settings(**{**s.__dict__, "stream_steps": tuple(n for n in s.stream_steps if n >= 100) or
                              s.stream_steps})
    for workers in (1, 2):
        gw = gws.vte(ports, procs.work, features, workers, "0,1", gateway_cmd)
        gw.start(procs)
        try:
            time.sleep(1.0)
            reqfile = cells.request_file(procs.work, f"{gw.name}-scale", cells.chat_requests(gw))
            wrk(gw.base, reqfile, 16, 2, both)
            r = cells.metered(gw.proc.pid if gw.proc else None,
                              lambda g=gw, f=reqfile: wrk(g.base, f, 64, s.seconds * 2, both))
            say(f"  --workers {workers}: {r['rps']:,.0f} req/s, p99 {r['p99_ms']} ms, {r['failures']} failures")
            r["streams"] = cells.sustained(cells.stream_url(gw), gw.paced, both, steps, gw.label)  # type: ignore[arg-type]
            out[f"workers_{workers}"] = r
        finally:
            gw.stop(procs)
    out["ratio"] = round(out["workers_2"]["rps"] / max(out["workers_1"]["rps"], 1e-9), 2)
    out["streams_ratio"] = round(out["workers_2"]["streams"]["sustained"] /
                                 max(out["workers_1"]["streams"]["sustained"], 1), 2)
    return out


def memory_of(gw: gws.Gateway, procs: Processes, cores: Cores, s: cells.Settings, streams: bool) -> dict[str, Any]:
    """A fresh process: idle RSS before any request, then the fixed load (with paced streams
    when the gateway served them in its streams cell)."""
    try:
        gw.start(procs, "-memory")
    except Exception as exc:
        return {"started": False, "evidence": str(exc)[:500]}
    try:
        time.sleep(3.0)
        idle = rss_mib(gw.proc.pid) if gw.proc else 0.0  # before any request
        err = gws.probe(gw, "chat", gws.CHAT)
        if err:
            return cells.not_served(err)
        say(f"{gw.label}: memory under load for {s.memory_minutes:g} min")
        return {"served": True, **cells.memory(gw, cells.chat_requests(gw), cores, s, procs.work, idle, streams)}
    finally:
        gw.stop(procs)


# ------------------------------------------------------------------ the run


def build(names: list[str], ports: gws.Ports, procs: Processes, cores: Cores, versions: dict[str, str],
          features: set[str], gateway_cmd: list[str] | None) -> list[gws.Gateway]:
    out = []
    for name in names:
        try:
            if name == "nginx":
                out.append(gws.floor(ports, procs.work, versions["nginx"], cores.gateway))
            elif name == "asgi":
                out.append(gws.asgi_floor(ports, cores.gateway))
            elif name == "vte":
                out.append(gws.vte(ports, procs.work, features, 1, cores.gateway, gateway_cmd))
            elif name == "litellm":
                out.append(gws.litellm(ports, procs.work, cores.gateway))
            elif name == "portkey":
                out.append(gws.portkey(ports, cores.gateway))
        except Exception as exc:  # an install that fails is shown in the table
            say(f"{name} could not be set up: {exc}")
            out.append(gws.Gateway(name, name, 0, None, None, None, None, "?", absent={"setup": str(exc)[:300]}))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    names = [n for n in args.gateways.split(",") if n]
    unknown = set(names) - set(ALL)
    if unknown:
        raise SystemExit(f"bench: unknown gateways {sorted(unknown)}; known: {', '.join(ALL)}")
    skip = {x for x in args.skip.split(",") if x}
    s = settings(args)
    gws.ensure_tools(not args.no_install)
    cores = pick_cores(args.gateway_cpu, args.load_cpu)
    raise_fd_limit(65536)
    work = workdir(args.workdir)
    WORK.append(work)
    if args.profile_streams:
        PROFILE_STREAMS.append(args.profile_streams)
    ports = gws.Ports.from_base(args.port_base)
    procs = Processes(work)
    gateway_cmd = shlex.split(args.gateway_cmd) if args.gateway_cmd else None
    res: dict[str, Any] = {"meta": meta(args, s, cores), "rig": {}, "gateways": {}}
    try:
        versions = gws.start_upstreams(procs, ports, cores)
        res["meta"]["versions"] = versions
        features, dropped = gws.vte_features(work, ports)
        res["meta"]["vte_features"] = {"on": sorted(features), "not_in_this_build": dropped}
        direct = gws.direct(ports)
        say("the rig's own ceilings: wrk and the stream client straight at the mocks")
        res["rig"]["wrk"] = cells.frontier(direct, cells.chat_requests(direct), cores, s, work, "direct")
        if "streams" not in skip:
            res["rig"]["streams"] = cells.sustained(cells.stream_url(direct), direct.paced, cores, s, "direct")
        for gw in build(names, ports, procs, cores, versions, features, gateway_cmd):
            if gw.port == 0:
                res["gateways"][gw.name] = {"label": gw.label, "started": False, "evidence": gw.absent["setup"]}
                continue
            res["gateways"][gw.name] = measure(gw, direct, procs, cores, s, skip)
        if "scaling" not in skip and "vte" in names:
            say("vte-proxy --workers 1 against --workers 2")
            res["scaling"] = scaling(ports, features, procs, s, gateway_cmd)
        if "memory" not in skip:
            res["memory"] = {}
            for gw in build([n for n in args.memory_gateways.split(",") if n in names], ports, procs, cores,
                            versions, features, gateway_cmd):
                streams = bool(cells.get_path(res["gateways"].get(gw.name), "streams", "served"))
                res["memory"][gw.name] = memory_of(gw, procs, cores, s, streams) if gw.port else {
                    "started": False, "evidence": gw.absent["setup"]}
    finally:
        procs.stop_all()
    res["meta"]["finished"] = now()
    res["meta"]["load_1min_end"] = load_1min()
    return res


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def meta(args: argparse.Namespace, s: cells.Settings, cores: Cores) -> dict[str, Any]:
    return {"started": now(), "smoke": args.smoke, "load_1min_start": load_1min(), "cpus": os.cpu_count(),
            "gateway_cpu": cores.gateway, "load_cpu": cores.load, "python": sys.version.split()[0],
            "settings": {k: getattr(s, k) for k in s.__dataclass_fields__}, "gateway_cmd": args.gateway_cmd}


def main() -> int:
    args = options()
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally above stops what was started
        res = run(args)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
        say(f"every figure: {args.json}")
    print(report.markdown(res) if args.markdown else report.table(res))
    if report.chart(res, Path(args.chart)):
        say(f"frontier chart: {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
