"""Extractor service: radiology report text in, abnormal findings out."""

from __future__ import annotations

from typing import Literal

from fastapi import FastAPI
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.runtime import create_app
from services.common.settings import ServiceSettings
from services.extractor.handlers import build_handlers


class ExtractorLlmSettings(BaseSettings):
    """The LLM part of the extractor's settings, alone: `radcurate label --backend llm` needs it
    without the database and broker settings a service process requires."""

    model_config = SettingsConfigDict(env_prefix="RADCURATE_EXTRACTOR_", extra="ignore")

    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None  # a secret: no default (a local server may need none)
    llm_model: str = "gpt-4o"
    llm_concurrency: int = 32
    llm_timeout_seconds: float = 60.0
    llm_max_attempts: int = 4  # HTTP attempts per completion (429/5xx/timeouts are retried)


class ExtractorSettings(ServiceSettings, ExtractorLlmSettings):
    model_config = SettingsConfigDict(env_prefix="RADCURATE_EXTRACTOR_", extra="ignore")

    service_name: str = "extractor"
    backend: Literal["rules", "llm"] = "rules"


def build_app(settings: ExtractorSettings | None = None) -> FastAPI:
    settings = settings or ExtractorSettings()
    return create_app(settings, build_handlers, title="RadCurate extractor")
