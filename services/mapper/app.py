"""Mapper service: extracted findings in, taxonomy labels (with evidence) out."""

from __future__ import annotations

from typing import Literal

from fastapi import FastAPI
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.runtime import create_app
from services.common.settings import ServiceSettings
from services.mapper.handlers import build_handlers


class MapperLlmSettings(BaseSettings):
    """The LLM part of the mapper's settings, alone: `radcurate label --backend llm` needs it
    without the database and broker settings a service process requires."""

    model_config = SettingsConfigDict(env_prefix="RADCURATE_MAPPER_", extra="ignore")

    llm_base_url: str | None = None
    llm_api_key: SecretStr = SecretStr("EMPTY")  # vLLM ignores it unless started with --api-key
    llm_model: str = "microsoft/Phi-4-reasoning"
    llm_concurrency: int = 64
    llm_timeout_seconds: float = 120.0
    llm_max_attempts: int = 4  # HTTP attempts per completion (429/5xx/timeouts are retried)


class MapperSettings(ServiceSettings, MapperLlmSettings):
    model_config = SettingsConfigDict(env_prefix="RADCURATE_MAPPER_", extra="ignore")

    service_name: str = "mapper"
    backend: Literal["lexicon", "llm"] = "lexicon"


def build_app(settings: MapperSettings | None = None) -> FastAPI:
    settings = settings or MapperSettings()
    return create_app(settings, build_handlers, title="RadCurate mapper")
