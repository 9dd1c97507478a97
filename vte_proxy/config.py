"""The schema of gateway.yaml: immutable, validated pydantic models.

This module holds the root (:class:`GatewayConfig`) with keys, providers and routes; the
limits, budgets and prices live in :mod:`vte_proxy.config_limits`, the traces' settings in
:mod:`vte_proxy.config_telemetry`, and the shared base model and ``Duration`` in
:mod:`vte_proxy.config_base`.

A :class:`GatewayConfig` is a value: it is built once by :func:`vte_proxy.loader.load_config`,
never mutated, and replaced as a whole on reload.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, WithJsonSchema, field_validator, model_validator

from vte_proxy.config_base import Duration, Frozen
from vte_proxy.config_limits import BudgetConfig, LimitsConfig, LimitSet, Price
from vte_proxy.config_telemetry import TelemetryConfig

StreamMode = Literal["auto", "force_stream", "force_non_stream"]
ProviderType = Literal["openai", "anthropic", "vertex-express", "echo"]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


class SystemPrompt(Frozen):
    """A system prompt the gateway puts into chat and Messages requests.

    ``prepend`` puts ``text`` before the client's own system prompt (or is the only one when
    the client sent none); ``replace`` drops the client's system prompt and uses ``text``.
    """

    text: str = Field(min_length=1)
    mode: Literal["prepend", "replace"] = "prepend"


class ErrorReply(Frozen):
    """Replace the message of the errors clients see that match ``status`` and/or ``code``."""

    status: int | None = Field(None, ge=400, le=599, description="HTTP status to match.")
    code: str | None = Field(None, min_length=1, description="Error code (or Anthropic error type) to match.")
    message: str = Field(min_length=1, description="The message clients see instead.")

    @model_validator(mode="after")
    def _matches_something(self) -> ErrorReply:
        if self.status is None and self.code is None:
            raise ValueError("give status, code or both (a rule must match something)")
        return self


class KeyConfig(Frozen):
    """A client key. The key itself never appears in logs, metrics or pages; ``name`` does."""

    name: str = Field(pattern=_NAME, description="Shown in logs and metrics.")
    key: SecretStr | None = Field(None, description="The key, usually ${VAR}.")
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 hex of the key.")
    models: tuple[str, ...] = Field(("*",), description="Allow-list of globs over exposed model names.")
    status: bool = Field(False, description="May open the status page (and /metrics with metrics.auth).")
    trace_content: bool = Field(False, description="Put this key's prompts and completions into its trace spans "
                                "(gen_ai.input.messages / gen_ai.output.messages) when telemetry is on.")
    limits: LimitSet = Field(LimitSet(), description="Per-key caps, exact across replicas with the redis store.")
    budget: BudgetConfig | None = Field(None, description="Spend cap; every model the key may use needs a price.")
    system_prompt: SystemPrompt | None = Field(None, description="Overrides the provider's and the global one.")

    @model_validator(mode="after")
    def _one_secret(self) -> KeyConfig:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key or key_sha256")
        if self.key is not None and not self.key.get_secret_value():
            raise ValueError("key is empty")
        return self


class Timeouts(Frozen):
    connect: Duration = Field(10.0, description="TCP/TLS connect.")
    first_byte: Duration = Field(60.0, description="Until the response headers; 504 beyond.")
    idle: Duration = Field(120.0, description="Longest silence inside a stream.")
    total: Duration | None = Field(None, description="Whole request including the stream; none by default.")


class Discover(Frozen):
    enabled: bool = False
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    interval: Duration = Field(600.0, gt=0)


class UpstreamKey(Frozen):
    """One key of a provider's pool; only ``name`` is ever shown (metrics, status, probe)."""

    name: str = Field(pattern=_NAME, description="Shown in metrics, the status page and probe.")
    key: SecretStr = Field(description="The upstream key, usually ${VAR}.")
    weight: float = Field(1.0, gt=0, description="Share of the traffic relative to the other ready keys.")

    @field_validator("key")
    @classmethod
    def _not_empty(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value():
            raise ValueError("key is empty")
        return v


def _url_error(v: str, what: str) -> str | None:
    """Why ``v`` is not an http(s) URL, or None. Never quotes ``v``: it may hold credentials."""
    try:
        parts = urlsplit(v)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"must be an http:// or https:// {what}"
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in v):
        return f"must be an http:// or https:// {what}"
    return None


class ProviderConfig(Frozen):
    name: str = Field(pattern=_NAME)
    type: ProviderType
    base_url: str | None = Field(None, description="API root, e.g. https://api.openai.com/v1 "
                                 "(anthropic: https://api.anthropic.com by default)")
    api_key: SecretStr | None = None
    api_keys: tuple[UpstreamKey, ...] | None = Field(
        None, min_length=1, description="A pool of upstream keys instead of api_key: picked by weight; a 429 "
        "cools a key down (Retry-After or cooldown), a 401/403 takes it out until the config changes.")
    cooldown: Duration = Field(60.0, gt=0, description="How long a pool key rests after a 429 without Retry-After.")
    proxy: SecretStr | None = Field(None, description="Outbound HTTP proxy, http://[user:password@]host:port "
                                    "(its credentials are treated as secrets).")
    system_prompt: SystemPrompt | None = Field(None, description="Overrides the global system prompt.")
    prefix: str = Field("", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.:-]*)?$")
    models: tuple[str, ...] = ()
    discover: Discover = Discover()
    stream_mode: StreamMode | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Timeouts()
    retries: int = Field(0, ge=0, le=10)
    max_connections: int = Field(256, ge=1, le=100_000, description="Upstream connection pool size.")
    limits: LimitSet = Field(LimitSet(), description="Caps on what the gateway sends to this provider.")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        # The message never quotes the value: a URL may carry credentials.
        problem = _url_error(v, "URL")
        if problem:
            raise ValueError(problem)
        parts = urlsplit(v)
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment (it is the API root, e.g. https://host/v1)")
        return v.rstrip("/")

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        url = v.get_secret_value()
        problem = _url_error(url, "proxy URL (http://[user:password@]host:port)")
        if problem:
            raise ValueError(problem)
        if urlsplit(url).path not in ("", "/") or urlsplit(url).query:
            raise ValueError("a proxy URL has no path or query (http://[user:password@]host:port)")
        return v

    @field_validator("api_keys")
    @classmethod
    def _unique_keys(cls, v: tuple[UpstreamKey, ...] | None) -> tuple[UpstreamKey, ...] | None:
        seen: dict[str, int] = {}
        for i, k in enumerate(v or ()):
            if k.name in seen:
                raise ValueError(f"api_keys[{i}].name {k.name!r} is already used by api_keys[{seen[k.name]}]")
            seen[k.name] = i
        return v

    @property
    def has_key(self) -> bool:
        """Whether an upstream key (one, or a pool) is configured."""
        return self.api_key is not None or self.api_keys is not None

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.match(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in {"host", "content-length", "transfer-encoding", "connection"}:
                raise ValueError(f"header {name!r} is managed by the gateway")
        return v

    @model_validator(mode="after")
    def _by_type(self) -> ProviderConfig:
        if self.type == "openai" and self.base_url is None:
            raise ValueError("base_url is required for type openai")
        if self.api_key is not None and self.api_keys is not None:
            raise ValueError("give api_key or api_keys, not both")
        if self.type in ("vertex-express", "anthropic") and not self.has_key:
            raise ValueError(f"api_key (or api_keys) is required for type {self.type}")
        if self.type not in ("openai", "anthropic") and self.discover.enabled:
            raise ValueError(f"discover is only supported for types openai and anthropic, not {self.type}")
        if not self.models and not self.discover.enabled:
            raise ValueError("models must list at least one model (or enable discover)")
        return self


class RouteTarget(Frozen):
    """A route target: an exposed model name and its weight (``weighted`` strategy)."""

    model: str = Field(min_length=1)
    weight: float = Field(1.0, gt=0)


def _target(value: Any) -> Any:
    return {"model": value} if isinstance(value, str) else value


_TARGET_SCHEMA = {"anyOf": [
    {"type": "string", "description": "An exposed model name."},
    {"type": "object", "additionalProperties": False, "required": ["model"],
     "properties": {"model": {"type": "string", "minLength": 1, "description": "An exposed model name."},
                    "weight": {"type": "number", "exclusiveMinimum": 0, "default": 1,
                               "description": "Share of the traffic (strategy weighted)."}}}]}
Target = Annotated[RouteTarget, BeforeValidator(_target), WithJsonSchema(_TARGET_SCHEMA)]
Strategy = Literal["fallback", "weighted", "least_busy", "latency"]


class Breaker(Frozen):
    """A circuit breaker per target of a route: after ``failures`` consecutive failures the
    target is skipped for ``pause``, then one probe request decides (success closes it)."""

    failures: int = Field(5, ge=0, description="Consecutive failures that open the circuit; 0 turns it off.")
    pause: Duration = Field(30.0, gt=0, description="How long an open circuit skips the target before a probe.")


class RouteConfig(Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
    strategy: Strategy = Field("fallback", description="fallback: in order; weighted: random by weight; "
                               "least_busy: fewest in flight; latency: power of two choices over a peak-EWMA "
                               "of time to first byte. Every strategy falls over to the next target.")
    targets: tuple[Target, ...] = Field(min_length=1)
    breaker: Breaker = Breaker()

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(t.model for t in self.targets)


class CorsConfig(Frozen):
    allow_origins: tuple[str, ...] = Field((), description="Origins browser pages may call from; \"*\" for any.")
    allow_headers: tuple[str, ...] | None = Field(
        None, description="Request headers a preflight allows. Unset: the headers the browser asks for "
                          "(the SDKs send headers of their own, such as the OpenAI JS SDK's x-stainless-*).")
    max_age: int = Field(600, ge=0, description="Seconds a browser may cache a preflight answer.")


class ServerConfig(Frozen):
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_concurrency: int = Field(1000, ge=1)
    shutdown_grace: Duration = 30.0
    body_timeout: Duration = Field(30.0, gt=0, description="Longest wait for the client's request body.")
    header_timeout: Duration = Field(10.0, description="Longest a client may take to send its request headers.")


class MetricsConfig(Frozen):
    auth: bool = False


class GatewayConfig(Frozen):
    """The whole of gateway.yaml."""

    version: Literal[1]
    stream_mode: StreamMode = "auto"
    keys: tuple[KeyConfig, ...] = Field(min_length=1)
    providers: tuple[ProviderConfig, ...] = Field(min_length=1)
    routes: tuple[RouteConfig, ...] = ()
    system_prompt: SystemPrompt | None = Field(None, description="Put into every chat and Messages request "
                                               "(a provider's or key's own system_prompt overrides it).")
    error_replies: tuple[ErrorReply, ...] = Field((), description="Replace the message of matching errors; "
                                                  "the first matching rule wins.")
    cors: CorsConfig = CorsConfig()
    server: ServerConfig = ServerConfig()
    metrics: MetricsConfig = MetricsConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    prices: dict[str, Price] = Field(default_factory=dict,
                                     description="USD per 1M tokens by exposed model name or glob (first match).")
    limits: LimitsConfig = LimitsConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> GatewayConfig:
        for field in ("keys", "providers", "routes"):
            seen: dict[str, int] = {}
            for i, item in enumerate(getattr(self, field)):
                if item.name in seen:
                    raise ValueError(f"{field}[{i}].name: {item.name!r} is already used by {field}[{seen[item.name]}]")
                seen[item.name] = i
        return self
