"""The command line: ``vte-proxy serve | check | schema | probe``."""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from typing import Any

import orjson

from vte_proxy import __version__
from vte_proxy.config import GatewayConfig, ServerConfig
from vte_proxy.config_limits import LimitSet
from vte_proxy.loader import ConfigError, LoadedConfig, load_config
from vte_proxy.routing import Entry
from vte_proxy.settings import Settings

log = logging.getLogger("vte_proxy.cli")

# The client key published in gateway.yaml.example and the README: anyone knows it.
DEMO_KEY_SHA256 = hashlib.sha256(b"sk-demo").hexdigest()
LOOPBACK = "127.0.0.1"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vte-proxy", description="Declarative OpenAI-compatible LLM API gateway.")
    ap.add_argument("--version", action="version", version=f"vte-proxy {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="gateway.yaml (env VTE_CONFIG; default ./gateway.yaml)")
    serve.add_argument("--host", help="listen address (env VTE_HOST; default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="listen port (env VTE_PORT; default 8050)")
    serve.add_argument("--workers", type=int, help="worker processes (env VTE_WORKERS; default 1)")
    check = sub.add_parser("check", help="validate a config offline and print its routing table")
    check.add_argument("path")
    check.add_argument("--allow-missing-env", action="store_true",
                       help="warn about unset ${VAR}s instead of failing (CI without the secrets)")
    sub.add_parser("schema", help="print the JSON Schema of gateway.yaml")
    probe = sub.add_parser("probe", help="test the connection to providers (every key of a pool): a models list "
                           "and a one-token chat; exit 1 if any failed")
    probe.add_argument("--config", help="gateway.yaml (env VTE_CONFIG; default ./gateway.yaml)")
    probe.add_argument("--timeout", type=float, metavar="SECONDS",
                       help="longest wait for each answer (default: the provider's timeouts)")
    probe.add_argument("targets", nargs="*", metavar="PROVIDER[/MODEL]",
                       help="providers to probe (default: all), optionally the model to chat with")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return check(args.path, args.allow_missing_env)
    if args.command == "schema":
        return schema()
    if args.command == "probe":
        return probe(args.config or Settings().config, args.targets, args.timeout)
    overrides = {k: v for k, v in vars(args).items() if k in ("config", "host", "port", "workers") and v is not None}
    return serve(Settings(**overrides))


def check(path: str, allow_missing_env: bool = False) -> int:
    """Validate offline (discovery is not run): exit 0 and the routing table, or 1 and every error."""
    try:
        loaded = load_config(path, allow_missing_env=allow_missing_env)
    except ConfigError as exc:
        print(f"{path}: {len(exc.issues)} error(s)", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return 1
    for warning in loaded.warnings:
        print(f"{path}: warning: {warning}", file=sys.stderr)
    config = loaded.config
    print(f"{path}: valid (sha256 {loaded.sha256[:12]}), {len(config.providers)} provider(s), "
          f"{len(config.keys)} key(s)")
    _print_routing(config)
    for line in limits_summary(config):
        print(f"  {line}")
    return 0


def _print_routing(config: GatewayConfig) -> None:
    from vte_proxy.routing import build_routing, is_glob

    table = build_routing(config, {})
    width = max((len(n) for n in table.entries), default=10)
    for entry in table.entries.values():
        if entry.route:
            print(f"  {entry.name:<{width}}  -> {_route_summary(entry)}")
        else:
            t = entry.targets[0]
            print(f"  {entry.name:<{width}}  -> {t.provider}: {t.upstream_model}")
    for p in config.providers:
        if p.discover.enabled:
            globs = [m for m in p.models if is_glob(m)]
            print(f"  ({p.name}: more models from discovery at run time, include {list(p.discover.include)}, "
                  f"exclude {list(p.discover.exclude)}" + (f", matching {globs}" if globs else "") + ")")


def _caps(limits: LimitSet) -> str:
    return ", ".join(f"{n} {getattr(limits, n)}" for n in ("rpm", "tpm", "concurrency")
                     if getattr(limits, n) is not None)


def limits_summary(config: GatewayConfig) -> list[str]:
    """The limits, budgets and prices of a config, one line each, for ``check``."""
    lim = config.limits
    redis = lim.redis if lim.store == "redis" else None
    store = lim.store + (f" (on_error {redis.on_error}, timeout {redis.timeout * 1000:g}ms)" if redis else "")
    lines = [f"  model {r.model}: {_caps(r)}" for r in lim.rules]
    lines += [f"  provider {p.name}: {_caps(p.limits)}" for p in config.providers if p.limits.given()]
    for k in config.keys:
        budget = f"budget {k.budget.usd:g} USD per {k.budget.period}" if k.budget else ""
        parts = [x for x in (_caps(k.limits), budget) if x]
        if parts:
            lines.append(f"  key {k.name}: {'; '.join(parts)}")
    if lines or lim.given() or lim.store != "memory":
        lines.insert(0, f"limits: store {store}" + (f"; gateway {_caps(lim)}" if lim.given() else ""))
    for name, p in config.prices.items():
        cached = f", cached_input {p.cached_input:g}" if p.cached_input is not None else ""
        lines.append(f"price {name}: input {p.input:g}, output {p.output:g}{cached} USD per 1M tokens")
    return lines


def _route_summary(entry: Entry) -> str:
    """``route: a, b`` (fallback), ``route (weighted): a x3, b x1``, ``route (latency): a, b``."""
    if entry.strategy == "weighted":
        targets = [f"{t.exposed} x{w:g}" for t, w in zip(entry.targets, entry.weights, strict=False)]
    else:
        targets = [t.exposed for t in entry.targets]
    how = "" if entry.strategy == "fallback" else f" ({entry.strategy})"
    return f"route{how}: {', '.join(targets)}"


def schema() -> int:
    from vte_proxy.config import GatewayConfig

    doc: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                           "$id": "https://github.com/vte-proxy/vte-proxy/gateway.schema.json",
                           **GatewayConfig.model_json_schema(mode="validation")}
    doc["title"] = "vte-proxy gateway.yaml"
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def has_demo_key(config: GatewayConfig) -> bool:
    """Whether a client key of ``config`` is the public demo key (given as the key or its hash)."""
    for k in config.keys:
        digest = hashlib.sha256(k.key.get_secret_value().encode()).hexdigest() if k.key else k.key_sha256
        if digest and digest.lower() == DEMO_KEY_SHA256:
            return True
    return False


def listen_host(settings: Settings, config: GatewayConfig) -> str:
    """The address to bind. A config that holds the public demo key binds loopback unless a host
    was asked for (``--host`` or ``VTE_HOST``): the example must not open the gateway to the network."""
    if not has_demo_key(config):
        return settings.host
    if "host" not in settings.model_fields_set:
        log.warning("the config holds the public demo key sk-demo: listening on %s only "
                    "(give --host or VTE_HOST to listen elsewhere, after changing the key)", LOOPBACK)
        return LOOPBACK
    if settings.host not in (LOOPBACK, "localhost", "::1"):
        log.warning("the config holds the public demo key sk-demo and listens on %s: "
                    "anyone who reaches this port can use the gateway and open its status page", settings.host)
    return settings.host


def _warn_memory_store(settings: Settings, config: GatewayConfig) -> None:
    """Each worker has its own memory store: its limits multiply by the number of workers."""
    from vte_proxy.limits.limiter import limits_in_use

    if settings.workers > 1 and config.limits.store == "memory" and limits_in_use(config):
        logging.getLogger("vte_proxy.limits").warning(
            "limits.store is memory with %d workers: each worker counts on its own, so every limit and budget "
            "is multiplied by %d; use store: redis", settings.workers, settings.workers)


def probe(path: str, targets: list[str], timeout: float | None = None) -> int:
    """Call each selected provider with every upstream key; 0 when every check passed."""
    import asyncio

    from vte_proxy.probe import ProbeError, report
    from vte_proxy.probe import probe as run_probe

    try:
        config = load_config(path).config
    except ConfigError as exc:
        print(f"{path}: {len(exc.issues)} error(s)", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return 1
    try:
        checks = asyncio.run(run_probe(config, targets, wait_limit=timeout))
    except ProbeError as exc:
        print(f"vte-proxy probe: {exc}", file=sys.stderr)
        return 1
    for line in report(checks):
        print(line)
    return 0 if all(c.ok for c in checks) else 1


def serve(settings: Settings) -> int:
    """Run the gateway until it is stopped (SIGTERM drains in-flight requests first)."""
    from vte_proxy.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    loaded = _load_or_report(settings.config)  # fail fast, readably, before any worker starts
    if loaded is None:
        return 1
    _prepare_multiprocess_metrics(settings)
    _warn_memory_store(settings, loaded.config)
    import uvicorn

    options = _uvicorn_options(settings, loaded.config.server)
    options["host"] = listen_host(settings, loaded.config)
    if settings.workers == 1:
        from vte_proxy.app import create_app

        uvicorn.Server(uvicorn.Config(create_app(settings.config, serving=True), **options)).run()
        return 0
    os.environ.update(VTE_CONFIG=os.path.abspath(settings.config),
                      VTE_LOG_LEVEL=settings.log_level, VTE_LOG_FORMAT=settings.log_format)
    uvicorn.run("vte_proxy.app:app_from_env", factory=True, workers=settings.workers, **options)
    return 0


def _load_or_report(path: str) -> LoadedConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"vte-proxy: cannot start, {path} is invalid:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return None


def _prepare_multiprocess_metrics(settings: Settings) -> None:
    """Several workers share one metrics view: prometheus_client's multiprocess directory must
    exist, be empty, and be in the environment before any worker imports the client (a
    directory given in the environment is honoured, and prepared, with one worker too)."""
    mp_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or (
        os.path.join(tempfile.gettempdir(), f"vte-proxy-metrics-{settings.port}") if settings.workers > 1 else "")
    if mp_dir:
        shutil.rmtree(mp_dir, ignore_errors=True)
        os.makedirs(mp_dir, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = mp_dir


def _uvicorn_options(settings: Settings, server: ServerConfig) -> dict[str, Any]:
    from vte_proxy.server import GuardedHttpToolsProtocol

    # A partial of the module-level class: it pickles, so every worker gets the header timeout.
    protocol = functools.partial(GuardedHttpToolsProtocol, header_timeout=server.header_timeout)
    return dict(
        host=settings.host, port=settings.port, loop="uvloop", http=protocol, ws="websockets-sansio",
        lifespan="on", log_config=None, access_log=False, server_header=False, proxy_headers=False,
        timeout_graceful_shutdown=int(server.shutdown_grace) or None, timeout_keep_alive=75,
    )
