"""What ``make bench`` runs: the mock upstreams and the gateways under test.

Upstreams (on the load core): nginx answering a fixed ``chat.completion`` (and a fixed 22-event
stream), and the paced SSE upstream of ``streams.mjs``. Gateways (each alone on the gateway core):
nginx ``proxy_pass`` (the floor), vte-proxy (also with ``--workers 2``), LiteLLM proxy (one
worker, installed into a venv under the cache dir on first use) and Portkey's gateway (npm
``@portkey-ai/gateway`` on Node, told where to go by its ``x-portkey-*`` headers).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig import HERE, ROOT, Cores, Processes, Request, http, say, wait_port

KEY = "sk-bench"
UPSTREAM_KEY = "sk-upstream-bench"
CACHE = Path(os.environ.get("VTE_BENCH_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                            / "vte-bench"))
CHAT = {"messages": [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "Say hello in five words."}], "max_tokens": 64}
MESSAGES = {"system": "You are terse.", "messages": [{"role": "user", "content": "Say hello in five words."}],
            "max_tokens": 64}


@dataclass(frozen=True)
class Ports:
    json: int
    sse: int
    paced: int
    floor: int
    floor_paced: int
    vte: int
    vte_w2: int
    asgi: int
    litellm: int
    portkey: int

    @classmethod
    def from_base(cls, b: int) -> Ports:
        return cls(json=b + 1, sse=b + 2, paced=b + 60, floor=b + 10, floor_paced=b + 11, vte=b + 40,
                   vte_w2=b + 41, asgi=b + 12, litellm=b + 20, portkey=b + 87)


@dataclass(frozen=True)
class Target:
    """How one gateway is asked for one kind of answer."""

    path: str
    model: str
    key: str = KEY
    headers: tuple[tuple[str, str], ...] = ()

    def request(self, body: dict[str, Any]) -> Request:
        auth = (("Authorization", f"Bearer {self.key}"),)
        return Request(self.path, json.dumps({"model": self.model, **body}).encode(), auth + self.headers)


@dataclass
class Gateway:
    """One gateway under test. ``chat``: a plain chat completion from the zero-delay upstream;
    ``paced``: a stream from the paced upstream; ``messages``: Anthropic's ``POST /v1/messages``
    answered by the (OpenAI-type) zero-delay upstream. ``None``: the gateway has no such path,
    with the reason in ``absent``."""

    name: str
    label: str
    port: int
    cmd: list[str] | None
    chat: Target | None
    paced: Target | None
    messages: Target | None
    version: str
    env: dict[str, str] = field(default_factory=dict)
    warmup_s: float = 2.0
    cpu: int | str | None = None
    absent: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, procs: Processes, tag: str = "") -> None:
        if self.cmd is None:
            return
        name = f"{self.name}{tag}.log"
        self.log = procs.work / name
        self.proc = procs.start(self.cmd if self.cpu is None else ["taskset", "-c", str(self.cpu), *self.cmd],
                                name, self.env)
        wait_port(self.port, self.proc, self.log, 180)

    def stop(self, procs: Processes) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
            self.proc = None

    def log_error(self) -> str:
        """The last error line of its log (ANSI colours removed), as evidence for a cell it cannot serve."""
        text = self.log.read_text(errors="replace") if self.log and self.log.exists() else ""
        lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()
                 if re.search(r"error|exception|traceback", ln, re.I)]
        return lines[-1][:300] if lines else ""


# ------------------------------------------------------------------ upstreams


def ensure_tools(install: bool) -> None:
    """wrk, nginx and node are needed; as root, Debian's packages are installed when missing."""
    missing = [t for t, pkg in (("wrk", "wrk"), ("nginx", "nginx-light"), ("node", "nodejs")) if not shutil.which(t)]
    if not jemalloc_path():
        missing.append("libjemalloc2")
    if missing and install and os.geteuid() == 0 and shutil.which("apt-get"):
        pkgs = " ".join({"wrk": "wrk", "nginx": "nginx-light", "node": "nodejs npm"}.get(m, m) for m in missing)
        say(f"installing Debian's packages: apt-get install -y {pkgs}")
        subprocess.run(f"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {pkgs}",
                       shell=True, check=False, stdout=subprocess.DEVNULL)
    for tool in ("wrk", "nginx", "node"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} is required (Debian: apt-get install wrk nginx-light nodejs)")


def fill(template: str, work: Path, ports: Ports) -> Path:
    """An nginx config of bench/ with its @...@ placeholders filled in, written to the work dir."""
    sys.path.insert(0, str(HERE))
    from sse_body import COMPLETION, MODELS, RESPONSE

    conf = (HERE / template).read_text()
    for k, v in {"@WORK@": str(work), "@JSON_PORT@": ports.json, "@SSE_PORT@": ports.sse,
                 "@PROXY_PORT@": ports.floor, "@PACED_PORT@": ports.paced, "@PACED_PROXY_PORT@": ports.floor_paced,
                 "@COMPLETION@": COMPLETION.decode(), "@MODELS@": MODELS.decode(),
                 "@RESPONSE@": RESPONSE.decode()}.items():
        conf = conf.replace(k, str(v))
    out = work / template
    out.write_text(conf)
    return out


def nginx_cmd(conf: Path) -> list[str]:
    return ["nginx", "-p", str(conf.parent), "-e", str(conf.parent / "error.log"), "-c", str(conf)]


def start_upstreams(procs: Processes, ports: Ports, cores: Cores) -> dict[str, str]:
    """nginx (the zero-delay JSON and 22-event SSE upstreams) and the paced upstream, on the load core."""
    sys.path.insert(0, str(HERE))
    from sse_body import sse_body

    work = procs.work
    (work / "stream.sse").write_bytes(sse_body())
    p = procs.start(cores.pin(nginx_cmd(fill("nginx-mock.conf", work, ports)), cores.load), "nginx.out")
    for port in (ports.json, ports.sse):
        wait_port(port, p, work / "nginx.out")
    paced = procs.start(cores.pin(["node", str(HERE / "streams.mjs"), "serve", "--port", str(ports.paced)],
                                  cores.load), "paced.log")
    wait_port(ports.paced, paced, work / "paced.log")
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {"nginx": nginx, "node": node}


def direct(ports: Ports) -> Gateway:
    """The upstreams themselves: every 'added' figure is a gateway's minus this, back to back."""
    return Gateway("direct", "mock upstream (straight)", ports.json, None,
                   Target("/v1/chat/completions", "gpt-4o-mini"),
                   Target(f"http://127.0.0.1:{ports.paced}/v1/chat/completions", "gpt-4o-mini"), None, "")


def floor(ports: Ports, work: Path, nginx: str, cpu: int | None) -> Gateway:
    """nginx proxy_pass on the gateway core: what any proxy costs at the least."""
    return Gateway("nginx", "nginx (floor)", ports.floor, nginx_cmd(fill("nginx-floor.conf", work, ports)),
                   Target("/v1/chat/completions", "gpt-4o-mini"),
                   Target(f"http://127.0.0.1:{ports.floor_paced}/v1/chat/completions", "gpt-4o-mini"), None,
                   f"nginx {nginx}", cpu=cpu,
                   absent={"messages": "nginx forwards bytes; it does not translate dialects"})


def asgi_floor(ports: Ports, cpu: int | str | None) -> Gateway:
    """uvicorn + aiohttp with a raw ASGI function between them (asgi_floor.py): the stack
    vte-proxy is built on, with none of its code; what any gateway on it can reach on this core."""
    import aiohttp
    import uvicorn

    env = {"FLOOR_JSON": f"http://127.0.0.1:{ports.json}/v1/chat/completions",
           "FLOOR_PACED": f"http://127.0.0.1:{ports.paced}/v1/chat/completions"}
    return Gateway("asgi", "uvicorn+aiohttp", ports.asgi,
                   [sys.executable, str(HERE / "asgi_floor.py"), "--port", str(ports.asgi)],
                   Target("/v1/chat/completions", "gpt-4o-mini"), Target("/v1/chat/completions", "paced/gpt-4o-mini"),
                   None, f"{uvicorn.__version__} / {aiohttp.__version__}", env=env, cpu=cpu,
                   absent={"messages": "it forwards bytes; it does not translate dialects"})


# ------------------------------------------------------------------ vte-proxy


def jemalloc_path() -> str | None:
    found = sorted(Path("/usr/lib").glob("*/libjemalloc.so.2"))
    return str(found[0]) if found else None


def image_allocator_env() -> dict[str, str]:
    """The allocator settings of the Dockerfile's runtime stage (jemalloc, PYTHONMALLOC=malloc),
    with LD_PRELOAD pointed at this machine's libjemalloc."""
    env: dict[str, str] = {}
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        for name in ("PYTHONMALLOC", "MALLOC_CONF"):
            m = re.search(rf"\b{name}=(\S+)", line)
            if m:
                env[name] = m.group(1)
    lib = jemalloc_path()
    return {**env, "LD_PRELOAD": lib} if lib and set(env) == {"PYTHONMALLOC", "MALLOC_CONF"} else {}


def vte_config(ports: Ports, features: set[str]) -> str:
    """The bench config: the bench key with limits that are never reached, a pool of two upstream
    keys on the bench provider, metrics and the request log on (they always are)."""
    limits = "\n    limits: {rpm: 1000000000, tpm: 1000000000000, concurrency: 100000}" if "limits" in features else ""
    pool = "".join(f"\n      - {{name: {n}, key: {UPSTREAM_KEY}-{n}}}" for n in ("one", "two"))
    keys = f"\n    api_keys:{pool}" if "pool" in features else f"\n    api_key: {UPSTREAM_KEY}"
    return textwrap.dedent("""\
        # written by bench/run.py
        version: 1
        stream_mode: auto
        keys:
          - name: bench
            key: {key}
            status: true{limits}
          - name: other
            key: sk-bench-other
            models: ["bench/*"]
        providers:
          - name: bench
            type: openai
            base_url: http://127.0.0.1:{json}/v1{keys}
            prefix: bench
            models: [gpt-4o-mini]
            max_connections: 1024
          - name: paced
            type: openai
            base_url: http://127.0.0.1:{paced}/v1
            api_key: {upstream_key}
            prefix: paced
            models: [gpt-4o-mini]
            max_connections: 20000
        server:
          max_concurrency: 20000
          shutdown_grace: 2s
        metrics: {{auth: false}}
        """).format(key=KEY, limits=limits, keys=keys, json=ports.json, paced=ports.paced,
                    upstream_key=UPSTREAM_KEY)


def vte_command() -> list[str]:
    exe = Path(sys.executable).with_name("vte-proxy")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "vte_proxy"]


def vte_features(work: Path, ports: Ports) -> tuple[set[str], dict[str, str]]:
    """Which of key limits and upstream key pools this build has: a config with each alone is
    checked with ``vte-proxy check``; one it refuses is left out, with the refusal as evidence."""
    features, dropped = set(), {}
    for name in ("limits", "pool"):
        error = check_config(work, vte_config(ports, {name}))
        if error:
            dropped[name] = error
        else:
            features.add(name)
    error = check_config(work, vte_config(ports, features))
    if error:
        raise SystemExit(f"bench: the bench config does not pass vte-proxy check: {error}")
    return features, dropped


def check_config(work: Path, text: str) -> str | None:
    cfg = work / "vte-check.yaml"
    cfg.write_text(text)
    out = subprocess.run([*vte_command(), "check", str(cfg)], capture_output=True, text=True, check=False)
    lines = (out.stdout + out.stderr).strip().splitlines()
    return None if out.returncode == 0 else " ".join((lines or ["refused"])[-1].split())[:200]


def vte(ports: Ports, work: Path, features: set[str], workers: int, cpu: int | str | None,
        gateway_cmd: list[str] | None = None) -> Gateway:
    from vte_proxy import __version__

    cfg = work / "vte-bench.yaml"
    cfg.write_text(vte_config(ports, features))
    port = ports.vte if workers == 1 else ports.vte_w2
    cmd = [*(gateway_cmd or vte_command()), "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    if workers != 1:
        cmd += ["--workers", str(workers)]
    env = {"VTE_LOG_LEVEL": "warning", "VTE_LOG_FORMAT": "text", **image_allocator_env()}
    name = "vte" if workers == 1 else f"vte_w{workers}"
    label = "vte-proxy" if workers == 1 else f"vte-proxy w{workers}"
    return Gateway(name, label, port, cmd, Target("/v1/chat/completions", "bench/gpt-4o-mini"),
                   Target("/v1/chat/completions", "paced/gpt-4o-mini"),
                   Target("/v1/messages", "bench/gpt-4o-mini", headers=(("anthropic-version", "2023-06-01"),)),
                   f"vte-proxy {__version__}", env=env, cpu=cpu)


# ------------------------------------------------------------------ peers


def ensure_litellm() -> tuple[Path, str]:
    """LiteLLM proxy in its own venv under the cache dir, installed on first use (a few minutes)."""
    venv = CACHE / "peers" / "litellm-venv"
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        say(f"installing LiteLLM proxy into {venv} (first use only)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    version = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True, check=False).stdout.strip()
    return exe, version


def litellm(ports: Ports, work: Path, cpu: int | None) -> Gateway:
    exe, version = ensure_litellm()
    models = "".join(f"""
          - model_name: {name}/gpt-4o-mini
            litellm_params:
              model: openai/gpt-4o-mini
              api_base: http://127.0.0.1:{port}/v1
              api_key: {UPSTREAM_KEY}""" for name, port in (("bench", ports.json), ("paced", ports.paced)))
    cfg = work / "litellm.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        # written by bench/run.py: no callbacks, no retries, no database
        model_list:{models}
        general_settings:
          master_key: {KEY}
        litellm_settings:
          drop_params: true
          callbacks: []
          num_retries: 0
        router_settings:
          num_retries: 0
        """))
    cmd = [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(ports.litellm), "--num_workers", "1",
           "--telemetry", "False"]
    return Gateway("litellm", "LiteLLM", ports.litellm, cmd,
                   Target("/v1/chat/completions", "bench/gpt-4o-mini"),
                   Target("/v1/chat/completions", "paced/gpt-4o-mini"),
                   Target("/v1/messages", "bench/gpt-4o-mini", headers=(("anthropic-version", "2023-06-01"),)),
                   f"litellm {version}", env={"LITELLM_LOG": "ERROR"}, warmup_s=3, cpu=cpu)


def ensure_portkey() -> tuple[Path, str]:
    """Portkey's open-source gateway from npm under the cache dir, installed on first use."""
    home = CACHE / "peers" / "portkey"
    script = home / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not script.exists():
        say(f"installing @portkey-ai/gateway from npm into {home} (first use only)")
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "package.json").exists():
            (home / "package.json").write_text('{"name": "vte-bench-peer-portkey", "private": true}\n')
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "@portkey-ai/gateway"], cwd=home, check=True,
                       stdout=subprocess.DEVNULL)
    version = json.loads((script.parents[1] / "package.json").read_text()).get("version", "?")
    return script, version


def portkey(ports: Ports, cpu: int | None) -> Gateway:
    script, version = ensure_portkey()

    def to(port: int, path: str) -> Target:
        return Target(path, "gpt-4o-mini", UPSTREAM_KEY, (("x-portkey-provider", "openai"),
                                                         ("x-portkey-custom-host", f"http://127.0.0.1:{port}/v1")))

    msg = to(ports.json, "/v1/messages")
    return Gateway("portkey", "Portkey", ports.portkey,
                   ["node", str(script), "--headless", f"--port={ports.portkey}"],
                   to(ports.json, "/v1/chat/completions"), to(ports.paced, "/v1/chat/completions"),
                   Target(msg.path, msg.model, msg.key, (*msg.headers, ("anthropic-version", "2023-06-01"))),
                   f"portkey {version}", warmup_s=6, cpu=cpu)


# ------------------------------------------------------------------ probes


def probe(gw: Gateway, kind: str, body: dict[str, Any]) -> str | None:
    """One request of a kind before measuring it: None when it is answered properly, else the
    evidence (its answer and the last error line of its log)."""
    target: Target | None = getattr(gw, kind)
    if target is None:
        return gw.absent.get(kind, "no such path")
    req = target.request(body)
    status, raw = http("POST", gw.base + req.path, req.body, {"Content-Type": "application/json",
                                                              **dict(req.headers)})
    text = raw.decode(errors="replace")
    ok = '"choices"' in text if kind == "chat" else '"type":"message"' in text.replace(" ", "")
    if status == 200 and ok:
        return None
    logged = gw.log_error()
    return f"HTTP {status} {' '.join(text.split())[:200]}" + (f"; its log: {logged}" if logged else "")
