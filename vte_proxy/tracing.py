"""OpenTelemetry traces with the GenAI semantic conventions: off by default, free when off.

:class:`Tracing` holds the tracer of the current config. ``Tracing.current`` is ``None``
while tracing is off, and then nothing else happens: the request path tests that one
attribute, creates no span object and never imports ``opentelemetry`` (the SDK is imported
by :mod:`vte_proxy.tracing_sdk` and the modules it imports, and only when a config turns
tracing on).

What turns it on, field by field (the file wins; the standard environment variables fill the
fields the file leaves out):

==========================  =======================================  ===========================
setting                     gateway.yaml ``telemetry:``              environment
==========================  =======================================  ===========================
on / off                    ``enabled`` (default: on when an         ``OTEL_SDK_DISABLED=true`` or
                            endpoint is known)                       ``OTEL_TRACES_EXPORTER=none``
                                                                     turn it off
collector URL               ``otlp_endpoint`` (base URL;             ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
                            ``/v1/traces`` appended)                 (as is), ``OTEL_EXPORTER_OTLP_ENDPOINT``
                                                                     (base); default localhost:4318
export headers              ``headers`` (each one wins over the      ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``
                            same name from the environment)          or ``OTEL_EXPORTER_OTLP_HEADERS``
sampling                    ``sample_ratio``                         ``OTEL_TRACES_SAMPLER`` (+ ``_ARG``)
service.name                ``service_name``                         ``OTEL_SERVICE_NAME``; default vte-proxy
export timeout, batching    -                                        ``OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT``,
                                                                     ``OTEL_BSP_SCHEDULE_DELAY``,
                                                                     ``OTEL_BSP_MAX_QUEUE_SIZE``,
                                                                     ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``
==========================  =======================================  ===========================

A reload that changes the resolved settings builds a new tracer provider; the old one is
retired: requests that started on it end their spans on it, and it is shut down (its queue
flushed) in a thread once the last of them is done, so no request ever waits for it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

from vte_proxy.config_telemetry import TelemetryConfig

if TYPE_CHECKING:  # the SDK is imported only when tracing is on
    from vte_proxy.tracing_sdk import Tracer

log = logging.getLogger("vte_proxy.tracing")


class KeyTries(Protocol):
    """The attempt being sent, as an upstream key pool sees it (one span per key it tries)."""

    def key(self, name: str, headers: Mapping[str, str]) -> Mapping[str, str]:
        """Sending with key ``name``: the headers to send (a new trace context after a failed key)."""

    def key_failed(self, status: int) -> None:
        """That key was refused (429, 401, 403); another may follow."""


# Set by the pipeline around each traced attempt (never while tracing is off), read by the
# upstream's key pool: a context variable, because the pool sits below the provider's own call.
KEY_TRIES: ContextVar[KeyTries | None] = ContextVar("vte_key_tries", default=None)

DEFAULT_ENDPOINT = "http://localhost:4318"
TRACES_PATH = "/v1/traces"
DEFAULT_SERVICE_NAME = "vte-proxy"
_TRUE = ("true", "1", "yes", "on")


@dataclass(frozen=True)
class TraceSettings:
    """Everything the tracer provider is built from; equal settings never rebuild it."""

    endpoint: str                              # the full OTLP/HTTP traces URL
    headers: tuple[tuple[str, str], ...]       # export headers (lower-case names); may hold secrets
    sample_ratio: float
    service_name: str
    timeout: float = 10.0                      # seconds per export request (retries included)
    schedule_delay: float = 5.0                # seconds between batch exports
    max_queue_size: int = 2048                 # spans waiting for export; beyond, new spans are dropped
    max_batch_size: int = 512

    def __repr__(self) -> str:  # never print header values: they are credentials
        return (f"TraceSettings(endpoint={self.endpoint!r}, headers={[k for k, _ in self.headers]}, "
                f"sample_ratio={self.sample_ratio}, service_name={self.service_name!r})")


def _env(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def is_enabled(config: TelemetryConfig, env: Mapping[str, str]) -> bool:
    """Whether tracing is on for this config block and environment."""
    if config.enabled is not None:
        return config.enabled
    if _env(env, "OTEL_SDK_DISABLED").lower() in _TRUE or _env(env, "OTEL_TRACES_EXPORTER").lower() == "none":
        return False
    return bool(config.otlp_endpoint or _env(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or _env(env, "OTEL_EXPORTER_OTLP_ENDPOINT"))


def traces_url(base: str) -> str:
    """A base URL (``http://collector:4318``) -> its traces URL; a URL that already ends in
    ``/v1/traces`` is kept as is."""
    base = base.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def resolve_endpoint(config: TelemetryConfig, env: Mapping[str, str]) -> str:
    if config.otlp_endpoint:
        return traces_url(config.otlp_endpoint)
    if signal := _env(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return signal  # the signal-specific variable is used as is (OTLP exporter specification)
    return traces_url(_env(env, "OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT)


def parse_env_headers(raw: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` (values percent-encoded, as the OTLP exporter specification says);
    malformed items are skipped (and never logged: they may hold a token)."""
    out = {}
    for item in raw.split(","):
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if sep and name:
            out[name] = unquote(value.strip())
    return out


def resolve_headers(config: TelemetryConfig, env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    raw = _env(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS") or _env(env, "OTEL_EXPORTER_OTLP_HEADERS")
    headers = parse_env_headers(raw)
    headers.update({k.lower(): v.get_secret_value() for k, v in config.headers.items()})
    return tuple(sorted(headers.items()))


def _ratio(value: str, default: float) -> float:
    try:
        ratio = float(value)
    except ValueError:
        return default
    return ratio if 0.0 <= ratio <= 1.0 else default


def resolve_ratio(config: TelemetryConfig, env: Mapping[str, str]) -> float:
    """``sample_ratio``, else what ``OTEL_TRACES_SAMPLER`` means as a ratio of new traces
    (always_on 1, always_off 0, traceidratio ``OTEL_TRACES_SAMPLER_ARG``), else 1. A client's
    sampled flag is always followed (parent-based)."""
    if config.sample_ratio is not None:
        return config.sample_ratio
    sampler = _env(env, "OTEL_TRACES_SAMPLER").lower().removeprefix("parentbased_")
    if sampler == "always_off":
        return 0.0
    if sampler == "traceidratio":
        return _ratio(_env(env, "OTEL_TRACES_SAMPLER_ARG"), 1.0)
    return 1.0


def _number(env: Mapping[str, str], names: tuple[str, ...], default: float, scale: float = 1.0) -> float:
    for name in names:
        if value := _env(env, name):
            try:
                number = float(value) * scale
            except ValueError:
                continue
            if number > 0:
                return number
    return default


def resolve(config: TelemetryConfig, env: Mapping[str, str]) -> TraceSettings | None:
    """The settings of the tracer for ``config`` and ``env``; None when tracing is off."""
    if not is_enabled(config, env):
        return None
    return TraceSettings(
        endpoint=resolve_endpoint(config, env),
        headers=resolve_headers(config, env),
        sample_ratio=resolve_ratio(config, env),
        service_name=config.service_name or _env(env, "OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME,
        timeout=_number(env, ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"), 10.0),
        schedule_delay=_number(env, ("OTEL_BSP_SCHEDULE_DELAY",), 5.0, scale=0.001),
        max_queue_size=int(_number(env, ("OTEL_BSP_MAX_QUEUE_SIZE",), 2048)),
        max_batch_size=int(_number(env, ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE",), 512)),
    )


def where(endpoint: str) -> str:
    """A collector URL as logs and pages show it: scheme, host and port only (never URL
    credentials, or a path or query that might hold a token)."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def describe(settings: TraceSettings | None) -> str:
    """For the log and the status page: where spans go, never a header value."""
    if settings is None:
        return "off"
    return f"OTLP/HTTP to {where(settings.endpoint)}, sample ratio {settings.sample_ratio:g}, " \
           f"service.name {settings.service_name}"


class Tracing:
    """The tracer of the current config (``current``; None when tracing is off).

    :meth:`configure` is called with every config that is swapped in (start and reloads); it
    rebuilds the tracer only when the resolved settings changed.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if env is None else env
        self.settings: TraceSettings | None = None
        self.current: Tracer | None = None

    def configure(self, config: TelemetryConfig) -> None:
        """Apply the ``telemetry`` block of a config that took effect (at start, on every reload
        and discovery swap; cheap when nothing changed). The first tracer imports the SDK
        (about 0.1 s, once per process)."""
        settings = resolve(config, self._env)
        if settings == self.settings:
            return
        old, self.current = self.current, self._build(settings)
        self.settings = settings
        if old is not None:
            old.retire()
        log.warning("tracing: %s", describe(settings) if self.current is not None or settings is None
                    else "off (the tracer could not be built; see above)")
        protocol = _env(self._env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _env(self._env,
                                                                                 "OTEL_EXPORTER_OTLP_PROTOCOL")
        if settings is not None and protocol and protocol != "http/protobuf":
            log.warning("tracing: OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; spans are sent as "
                        "http/protobuf", protocol[:20])

    @staticmethod
    def _build(settings: TraceSettings | None) -> Tracer | None:
        if settings is None:
            return None
        try:
            from vte_proxy.tracing_sdk import Tracer

            return Tracer(settings)
        except Exception:  # tracing must never take a reload (or the start) down
            log.exception("tracing: building the tracer failed; traces are off")
            return None

    async def aclose(self, grace: float = 5.0) -> None:
        """At shutdown: export what is queued, waiting at most ``grace`` seconds."""
        tracer, self.current, self.settings = self.current, None, None
        if tracer is not None:
            await tracer.aclose(grace)
