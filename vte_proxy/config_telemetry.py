"""The config of OpenTelemetry traces (``telemetry:`` in gateway.yaml); :mod:`vte_proxy.tracing` uses it."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from vte_proxy.config_base import Frozen


class TelemetryConfig(Frozen):
    """OpenTelemetry traces, exported over OTLP/HTTP (protobuf). Every field left out is taken
    from the standard ``OTEL_*`` environment variables (the file wins where both are set)."""

    enabled: bool | None = Field(None, description="Default: on when an endpoint is set here or in "
                                 "OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.")
    otlp_endpoint: str | None = Field(None, description="The collector's OTLP/HTTP base URL, e.g. "
                                      "http://otel-collector:4318 (/v1/traces is appended unless given).")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="Headers of every export request "
                                          "(e.g. a token: ${OTLP_TOKEN}); merged over OTEL_EXPORTER_OTLP_HEADERS.")
    sample_ratio: float | None = Field(None, ge=0, le=1, description="Share of new traces recorded (a client's "
                                       "sampled flag is followed). Default 1, or OTEL_TRACES_SAMPLER_ARG.")
    service_name: str | None = Field(None, min_length=1, description="service.name of the spans. Default: "
                                     "OTEL_SERVICE_NAME, else vte-proxy.")

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is None:
            return v
        # The message never quotes the value; credentials belong in headers, where they stay secret.
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("must be an http:// or https:// URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in v):
            raise ValueError("must be an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold credentials: put them in telemetry.headers")
        return v

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name in v:
            if not re.match(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", name):
                raise ValueError(f"invalid header name {name!r}")
        return v
