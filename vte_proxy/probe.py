"""``vte-proxy probe``: test the connection to providers from the config file, no server needed.

For each named provider (all by default) and each of its upstream keys (every key of an
``api_keys`` pool, by name), it lists the models (where the type has a models list) and sends
a one-token chat, and reports status, latency and the models seen. It goes through the same
provider code, outbound ``proxy`` and timeouts as ``serve`` (one :class:`Provider` per key),
so what it reports is what serving would meet. Keys are only ever shown by name.

Why not httpx, as first planned: httpx is not a runtime dependency (the upstream boundary is
aiohttp, see :mod:`vte_proxy.upstream`), and a second client would need a second copy of every
provider type's URLs, headers and translation, which would drift from what ``serve`` sends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from vte_proxy.config import GatewayConfig, ProviderConfig
from vte_proxy.errors import GatewayError, UpstreamError
from vte_proxy.providers import build_provider
from vte_proxy.providers.base import Call, Provider
from vte_proxy.routing import Target, discoverable, exposed_name, is_glob
from vte_proxy.upstream import ConnectorFactory

CHAT_PROMPT = "Reply with one word: ok"


@dataclass(frozen=True)
class Check:
    """One probe step's outcome: ``step`` is ``models`` or ``chat``."""

    provider: str
    key: str            # the pool key's name, ``api_key`` for a single key, ``-`` for none
    step: str
    ok: bool
    seconds: float
    detail: str         # models seen / the model tried / what went wrong (never a secret)
    status: int | None = None

    def line(self, width: int) -> str:
        result = "ok" if self.ok else ("unreachable" if self.status is None else f"HTTP {self.status}")
        return (f"{self.provider:<{width}}  key {self.key:<10}  {self.step:<6}  {result:<11}  "
                f"{self.seconds * 1000:7.0f} ms  {self.detail}")


class ProbeError(Exception):
    """A probe that cannot run (an unknown provider named on the command line)."""


def select(config: GatewayConfig, selectors: Sequence[str]) -> list[tuple[ProviderConfig, str | None]]:
    """``PROVIDER`` or ``PROVIDER/MODEL`` selectors (none: every provider) -> (provider, model)."""
    if not selectors:
        return [(p, None) for p in config.providers]
    names = {p.name: p for p in config.providers}
    out = []
    for sel in selectors:
        name, _, model = sel.partition("/")
        if name not in names:
            raise ProbeError(f"no provider named {name!r} in the config (providers: {', '.join(names)})")
        out.append((names[name], model or None))
    return out


def per_key(config: ProviderConfig, timeout: float | None = None) -> list[tuple[str, ProviderConfig]]:
    """One single-key provider config per upstream key (labelled by the key's name);
    ``timeout`` caps connecting and waiting for each answer."""
    if timeout is not None:
        t = config.timeouts
        capped = {"connect": min(t.connect or timeout, timeout), "first_byte": min(t.first_byte or timeout, timeout),
                  "idle": min(t.idle or timeout, timeout), "total": min(t.total or timeout, timeout)}
        config = config.model_copy(update={"timeouts": t.model_copy(update=capped)})
    if config.api_keys:
        return [(k.name, config.model_copy(update={"api_key": k.key, "api_keys": None})) for k in config.api_keys]
    return [("api_key" if config.api_key is not None else "-", config)]


def _failure(exc: BaseException) -> tuple[int | None, str]:
    """A failed step's status (None: not reached) and a secret-free description."""
    if isinstance(exc, UpstreamError):
        status = exc.status if exc.answered else None
        return status, exc.message + _upstream_code(exc.upstream_body)
    if isinstance(exc, GatewayError):
        return exc.status, exc.message
    return None, f"failed ({exc.__class__.__name__})"


def _upstream_code(body: bytes | None) -> str:
    """`` (code)`` from an upstream's (already redacted) JSON error body; the message is left
    out: some upstreams quote part of the rejected key in it."""
    try:
        error = orjson.loads(body or b"null")["error"]
        code = error.get("code") or error.get("type") or error.get("status")
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
        return ""
    return f" ({str(code)[:60]})" if isinstance(code, str | int) and code else ""


def _has_models_list(provider: Provider) -> bool:
    return type(provider).discover is not Provider.discover


class Prober:
    """Runs the probe steps; ``connector`` replaces the network (tests)."""

    def __init__(self, connector: ConnectorFactory | None = None, timeout: float | None = None) -> None:
        self.connector = connector
        self.timeout = timeout

    async def provider(self, config: ProviderConfig, model: str | None) -> list[Check]:
        checks: list[Check] = []
        for key, cfg in per_key(config, self.timeout):
            provider = build_provider(cfg, self.connector)
            try:
                checks += await self._key(provider, cfg, key, model)
            finally:
                await provider.aclose()
        return checks

    async def _key(self, provider: Provider, config: ProviderConfig, key: str, model: str | None) -> list[Check]:
        seen: tuple[str, ...] = ()
        checks = []
        if _has_models_list(provider):
            check, seen = await self._models(provider, key)
            checks.append(check)
        checks.append(await self._chat(provider, key, model or _first_model(config, seen)))
        return checks

    async def _models(self, provider: Provider, key: str) -> tuple[Check, tuple[str, ...]]:
        started = time.monotonic()
        try:
            models = await provider.discover()
        except Exception as exc:
            status, detail = _failure(exc)
            return Check(provider.name, key, "models", False, time.monotonic() - started, detail, status), ()
        shown = ", ".join(models[:8]) + (", ..." if len(models) > 8 else "")
        return Check(provider.name, key, "models", True, time.monotonic() - started,
                     f"{len(models)} model(s): {shown}", 200), models

    async def _chat(self, provider: Provider, key: str, model: str | None) -> Check:
        if model is None:
            return Check(provider.name, key, "chat", False, 0.0, "no model to try (name one: PROVIDER/MODEL)")
        body = {"model": model, "messages": [{"role": "user", "content": CHAT_PROMPT}], "max_tokens": 1}
        target = Target(exposed_name(provider.config, model), provider.name, model)
        started = time.monotonic()
        try:
            await provider.send(Call("chat/completions", body, target, False))
        except Exception as exc:
            status, detail = _failure(exc)
            return Check(provider.name, key, "chat", False, time.monotonic() - started, f"{model}: {detail}", status)
        return Check(provider.name, key, "chat", True, time.monotonic() - started, model, 200)


def _first_model(config: ProviderConfig, seen: tuple[str, ...]) -> str | None:
    """The model the chat step uses: the first literal one, else the first enabled one seen."""
    literal = [m for m in config.models if not is_glob(m)]
    if literal:
        return literal[0]
    return next((m for m in seen if discoverable(config, m)), None)


async def probe(config: GatewayConfig, selectors: Sequence[str], connector: ConnectorFactory | None = None,
                wait_limit: float | None = None) -> list[Check]:
    """Every check for the selected providers, in config (or command line) order; ``wait_limit``
    caps the providers' timeouts (``--timeout``)."""
    prober = Prober(connector, wait_limit)
    checks: list[Check] = []
    for provider, model in select(config, selectors):
        checks += await prober.provider(provider, model)
    return checks


def report(checks: Sequence[Check]) -> list[str]:
    """The lines ``vte-proxy probe`` prints, the last one a summary."""
    width = max((len(c.provider) for c in checks), default=8)
    lines = [c.line(width) for c in checks]
    failed = sum(not c.ok for c in checks)
    keys = len({(c.provider, c.key) for c in checks})
    lines.append(f"probe: {len({c.provider for c in checks})} provider(s), {keys} key(s), {len(checks)} check(s), "
                 + (f"{failed} failed" if failed else "all ok"))
    return lines
