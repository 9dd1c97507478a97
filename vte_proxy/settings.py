"""Process settings from the environment (``VTE_*``); command-line flags override them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VTE_", extra="ignore", frozen=True)

    config: str = Field("gateway.yaml", description="Path of gateway.yaml")
    host: str = "0.0.0.0"
    port: int = Field(8050, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=256)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["text", "json"] = "text"
