"""The table of ``make bench`` (stdout), the targets of issue 17 judged on it, and the frontier
chart (PNG, matplotlib from the dev extras)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BOUNDS = ("p99<1ms", "p99<5ms", "p99<10ms", "p99<50ms", "unbounded")
ORDER = ("nginx", "asgi", "vte", "litellm", "portkey")
NS = "not served"


def num(v: float | None, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def served(cell: Any) -> bool:
    return isinstance(cell, dict) and cell.get("served", True) is not False


def cell_text(g: dict[str, Any], section: str, fmt: Any) -> str:
    if g.get("started") is False:
        return "did not start"
    cell = g.get(section)
    if cell is None:
        return "-"
    if not served(cell):
        return NS
    return str(fmt(cell))


def rows(res: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(label, function of a gateway's results -> text, section) per row of the table."""
    def bound(b: str) -> Any:
        return lambda f: num(get(f, "bounds", b, "rps"))

    return [
        ("added p50 at c=1, ms", lambda c: num(c["added_p50_ms"], ".3f"), "latency"),
        ("added p99 at c=1, ms", lambda c: num(c["added_p99_ms"], ".3f"), "latency"),
        *((f"req/s, {b.replace('p99<', 'p99 < ')}", bound(b), "frontier") for b in BOUNDS),
        ("CPU us/request (at best req/s)", lambda f: num(get(f, "at_best", "cpu_us_per_req"), ",.0f"), "frontier"),
        ("stream: added TTFT p50, ms", lambda c: num(c["added_ttft_p50_ms"], ".2f"), "streams"),
        ("stream: added gap p50 / p99, ms",
         lambda c: f"{num(c['added_gap_p50_ms'], '.2f')} / {num(c['added_gap_p99_ms'], '.2f')}", "streams"),
        ("streams sustained", lambda c: sustained_text(c.get("sustained")), "streams"),
        ("stream: CPU us/stream at that step", lambda c: num(stream_cpu(c.get("sustained"))), "streams"),
        ("/v1/messages: added p50 / p99, ms", lambda c: f"{num(get(c, 'latency', 'added_p50_ms'), '.3f')} / "
         f"{num(get(c, 'latency', 'added_p99_ms'), '.3f')}", "messages"),
        ("/v1/messages: req/s unbounded", lambda c: num(get(c, "frontier", "bounds", "unbounded", "rps")), "messages"),
    ]


def stream_cpu(st: dict[str, Any] | None) -> float | None:
    """The gateway's CPU per stream (its 67 frames, connection and request) at the last step it passed."""
    passed = [w for w in (st or {}).get("steps", []) if w.get("pass")]
    return passed[-1].get("gateway_cpu_us_per_stream") if passed else None


def sustained_text(st: dict[str, Any] | None) -> str:
    if not st:
        return "-"
    return f"{st['sustained']:,}" + ("+" if st.get("top_step_passed") else "")


def memory_rows(res: dict[str, Any]) -> list[tuple[str, Any]]:
    return [("memory: idle / steady / recovered, MiB",
             lambda m: f"{num(m.get('idle_mib'), '.0f')} / {num(m.get('steady_mib'), '.0f')} / "
                       f"{num(m.get('recovered_mib'), '.0f')}"),
            ("memory: growth after warm-up, MiB/min", lambda m: num(m.get("growth_mib_per_min"), "+.2f"))]


def table(res: dict[str, Any]) -> str:
    meta, gw = res["meta"], res["gateways"]
    names = [n for n in ORDER if n in gw]
    width = 20
    out = [header(res), ""]
    out.append(f"{'':40s}" + "".join(f"{gw[n]['label'][:width - 1]:>{width}s}" for n in names))
    out.append(f"{'':40s}" + "".join(f"{(gw[n].get('version') or '')[:width - 1]:>{width}s}" for n in names))
    for label, fmt, section in rows(res):
        out.append(f"{label:40s}" + "".join(f"{cell_text(gw[n], section, fmt):>{width}s}" for n in names))
    mem = res.get("memory") or {}
    for label, fmt in memory_rows(res):
        cells = []
        for n in names:
            m = mem.get(n)
            cells.append("-" if m is None else ("did not start" if m.get("started") is False else
                                                 NS if not served(m) else fmt(m)))
        out.append(f"{label:40s}" + "".join(f"{c:>{width}s}" for c in cells))
    fails = [num(failures(gw[n], mem.get(n)), ",") for n in names]
    out.append(f"{'failures (wrk + streams, all cells)':40s}" + "".join(f"{f:>{width}s}" for f in fails))
    out += evidence(res, names)
    out += scaling_lines(res)
    out += targets(res)
    if meta.get("smoke"):
        out.append("SMOKE RUN (--smoke): tiny durations; these figures check the harness, they measure nothing.")
    return "\n".join(out)


def header(res: dict[str, Any]) -> str:
    meta, rig = res["meta"], res.get("rig", {})
    s = meta.get("settings", {})
    wrk_best = get(rig, "wrk", "at_best")
    streams = get(rig, "streams")
    lines = [f"make bench: {meta.get('started')} to {meta.get('finished')}; load average (1 min) "
             f"{meta.get('load_1min_start')} at the start, {meta.get('load_1min_end')} at the end; "
             f"gateway on CPU {meta.get('gateway_cpu')}, wrk + mocks + stream client on CPU {meta.get('load_cpu')}",
             f"wrk -t1 {s.get('seconds')} s per step, concurrency doubling to {s.get('max_conns')}; paced streams: "
             f"64 deltas 20 ms apart, steps {s.get('stream_steps')}; vte-proxy features on: "
             f"{', '.join(get(meta, 'vte_features', 'on') or []) or 'none'} + metrics + request log"
             + "".join(f"; {k} not in this build ({v})" for k, v in (get(meta, 'vte_features', 'not_in_this_build')
                                                                    or {}).items()),
             f"the rig's own ceiling (straight at the mocks): wrk {num(get(wrk_best, 'rps'))} req/s "
             f"(c={get(wrk_best, 'conns')}, p99 {get(wrk_best, 'p99_ms')} ms); stream client "
             f"{sustained_text(streams)} streams"]
    return "\n".join(lines)


def failures(g: dict[str, Any], m: dict[str, Any] | None) -> int | None:
    if g.get("started") is False:
        return None
    total = 0
    for path in (("latency", "failures"), ("messages", "latency", "failures")):
        total += get(g, *path) or 0
    for steps in (get(g, "frontier", "steps"), get(g, "messages", "frontier", "steps")):
        # the sweep's last step may fail by design (it stops there): counted, and shown apart
        total += sum(x["failures"] for x in steps or [])
    total += sum(w["failed"] for w in (get(g, "streams", "sustained", "steps") or [])[:-1])
    if get(g, "streams", "gateway"):
        total += g["streams"]["gateway"]["failed"]
    return total + ((m or {}).get("failures") or 0)


def evidence(res: dict[str, Any], names: list[str]) -> list[str]:
    out = []
    for n in names:
        g = res["gateways"][n]
        if g.get("started") is False:
            out.append(f"  {g['label']} did not start: {g.get('evidence')}")
        for section in ("latency", "streams", "messages"):
            c = g.get(section)
            if isinstance(c, dict) and c.get("served") is False:
                out.append(f"  {g['label']}, {section}: not served: {c.get('evidence')}")
        st = get(g, "streams", "sustained")
        if st and st.get("failed_at"):
            last = st["steps"][-1]
            out.append(f"  {g['label']}, streams: failed at {st['failed_at']:,}: {last['reasons']} "
                       f"({(last.get('samples') or [''])[0][:160]})")
    st = get(res, "rig", "streams")
    if st and st.get("failed_at"):
        out.append(f"  the rig itself (stream client straight at the paced upstream) failed at {st['failed_at']:,}: "
                   f"{st['steps'][-1]['reasons']}")
    return ["", *out] if out else []


def scaling_lines(res: dict[str, Any]) -> list[str]:
    sc = res.get("scaling")
    if not sc:
        return []
    w1, w2 = sc["workers_1"], sc["workers_2"]
    return ["", f"vte-proxy --workers 2 against 1 ({sc['note']}): {w2['rps']:,.0f} against {w1['rps']:,.0f} req/s, "
                f"x{sc['ratio']:.2f}; p99 {w2['p99_ms']} against {w1['p99_ms']} ms; failures {w2['failures']} / "
                f"{w1['failures']}; streams sustained {sustained_text(w2.get('streams'))} against "
                f"{sustained_text(w1.get('streams'))}"]


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None:
        return None
    if not b:
        return float("inf")
    return a / b


def readings(vte: dict[str, Any], peer: dict[str, Any], factor: float) -> tuple[bool, list[str]]:
    """vte-proxy's req/s over the peer's at every bound of the frontier (and of the /v1/messages
    frontier when the peer serves it): a bound neither reaches is no reading; one only the peer
    reaches is a miss; one only vte-proxy reaches counts as met (x inf)."""
    ok, parts = True, []
    for label, path in [(b, ("frontier", "bounds", b)) for b in BOUNDS] + [
            (f"messages {b}", ("messages", "frontier", "bounds", b)) for b in BOUNDS if served(peer.get("messages"))]:
        v, w = get(vte, *path, "rps"), get(peer, *path, "rps")
        if v is None and w is None:
            continue
        r = ratio(v, w)
        ok = ok and r is not None and r >= factor
        parts.append(f"{label} " + ("-" if r is None else "x inf" if r == float("inf") else f"x{r:.1f}"))
    return ok, parts


def ceilings(res: dict[str, Any]) -> str:
    """What bounds the streams reading on this machine: the stream client straight at the paced
    upstream, nginx, and the Python stack vte-proxy is built on, with none of its code."""
    gw = res["gateways"]
    found = [("rig", get(res, "rig", "streams", "sustained")),
             ("nginx", get(gw, "nginx", "streams", "sustained", "sustained")),
             ("Python floor", get(gw, "asgi", "streams", "sustained", "sustained"))]
    shown = [f"{label} {num(n, ',')}" for label, n in found if n is not None]
    return f" (same run: {', '.join(shown)})" if shown else ""


def targets(res: dict[str, Any]) -> list[str]:
    gw, mem = res["gateways"], res.get("memory") or {}
    vte = gw.get("vte")
    if not vte or vte.get("started") is False:
        return []
    out = ["", "Targets of issue 17 (same run):"]

    def line(ok: bool | None, text: str) -> None:
        out.append(f"  {'n/a ' if ok is None else 'met ' if ok else 'MISS'} {text}")

    for peer, factor in (("portkey", 3.0), ("litellm", 40.0)):
        p = gw.get(peer)
        if not p or not served(p.get("frontier")) or p.get("started") is False:
            line(None, f"x{factor:g} {peer} on every throughput reading: {peer} not measured or not served")
            continue
        ok, parts = readings(vte, p, factor)
        line(ok, f"x{factor:g} {peer} on every throughput reading: " + ", ".join(parts))
    pk = gw.get("portkey")
    a, b = get(vte, "latency", "added_p99_ms"), get(pk, "latency", "added_p99_ms")
    line(None if a is None or b is None else a < b / 3,
         f"added p99 at c=1 under a third of Portkey's: {num(a, '.3f')} ms against {num(b, '.3f')} / 3")
    s_v, s_p = get(vte, "streams", "sustained", "sustained"), get(pk, "streams", "sustained", "sustained")
    line(None if s_v is None else s_v >= 1000 and (s_p is None or s_v >= s_p),
         f"streams sustained >= 1,000 and >= Portkey's: {num(s_v, ',')} against "
         f"{num(s_p, ',') if s_p is not None else 'Portkey ' + NS}{ceilings(res)}")
    g = get(mem, "vte", "growth_mib_per_min")
    line(None if g is None else g < 0.5, f"memory growth under 0.5 MiB/min after warm-up: {num(g, '+.3f')} MiB/min"
         f" over {get(mem, 'vte', 'minutes')} min")
    f = failures(vte, mem.get("vte"))
    line(f == 0, f"zero errors: {f} (every vte-proxy cell, the sweep's last step included)")
    sc = res.get("scaling")
    line(None if not sc else sc["ratio"] > 1.2 and sc.get("streams_ratio", 0) > 1.2,
         f"--workers 2 scales: x{sc['ratio']:.2f} req/s, x{sc.get('streams_ratio', 0):.2f} streams sustained "
         "(wrk and the stream client share the two cores)" if sc else "--workers 2 scales: not measured")
    return out


# ------------------------------------------------------------------ chart


def chart(res: dict[str, Any], path: Path) -> bool:
    """req/s at each p99 bound, one line per gateway (log scale). False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    gw = res["gateways"]
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    xs = list(range(len(BOUNDS)))
    for n in ORDER:
        g = gw.get(n)
        if not g or not served(g.get("frontier")) or g.get("started") is False:
            continue
        ys = [get(g, "frontier", "bounds", b, "rps") for b in BOUNDS]
        pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=g["label"])
            for x, y in pts:
                ax.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    rig = get(res, "rig", "wrk", "at_best", "rps")
    if rig:
        ax.axhline(rig, color="grey", linestyle=":", linewidth=1, label=f"rig ceiling (wrk at the mock) {rig:,.0f}")
    ax.set_yscale("log")
    ax.set_xticks(xs, ["p99 < 1 ms", "< 5 ms", "< 10 ms", "< 50 ms", "unbounded"])
    ax.set_ylabel("requests/s, no failures (one core)")
    title = "Throughput frontier: the most req/s with p99 under each bound"
    ax.set_title(title + (" (SMOKE)" if res["meta"].get("smoke") else ""), fontsize=10)
    ax.grid(True, which="both", axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


# ------------------------------------------------------------------ markdown (README, docs)


def markdown(res: dict[str, Any]) -> str:
    """The table as Markdown, for the README and docs/performance.md (``run.py --markdown``)."""
    gw, mem = res["gateways"], res.get("memory") or {}
    names = [n for n in ORDER if n in gw]
    out = ["| | " + " | ".join(f"{gw[n]['label']} ({gw[n].get('version') or '?'})" for n in names) + " |",
           "| --- |" + " ---: |" * len(names)]
    for label, fmt, section in rows(res):
        out.append(f"| {label} | " + " | ".join(cell_text(gw[n], section, fmt) for n in names) + " |")
    for label, fmt in memory_rows(res):
        vals = []
        for n in names:
            m = mem.get(n)
            vals.append("not measured" if m is None else "did not start" if m.get("started") is False else
                        NS if not served(m) else fmt(m))
        out.append(f"| {label} | " + " | ".join(vals) + " |")
    out.append("| failures, all cells | " + " | ".join(num(failures(gw[n], mem.get(n)), ",") for n in names) + " |")
    notes = evidence(res, names) + scaling_lines(res) + targets(res)
    return "\n".join([header(res).replace("\n", "  \n"), "", *out, "", "```", *[n for n in notes if n], "```"])
