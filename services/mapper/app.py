"""Mapper service: extracted findings in, taxonomy labels (with evidence) out."""

from __future__ import annotations

from typing import Literal

from fastapi import FastAPI
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.runtime import create_app
from services.common.settings import LlmSettings, ServiceSettings
from services.mapper.handlers import build_handlers


class MapperLlmSettings(LlmSettings):
    model_config = SettingsConfigDict(env_prefix="RADCURATE_MAPPER_", extra="ignore")

    llm_api_key: SecretStr | None = SecretStr("EMPTY")  # vLLM ignores it unless started with --api-key
    llm_model: str = "microsoft/Phi-4-reasoning"
    llm_concurrency: int = 64  # vLLM batches continuously: many requests in flight keep the GPU busy
    llm_timeout_seconds: float = 120.0  # reasoning output is long


class MapperSettings(ServiceSettings, MapperLlmSettings):
    model_config = SettingsConfigDict(env_prefix="RADCURATE_MAPPER_", extra="ignore")

    service_name: str = "mapper"
    backend: Literal["lexicon", "llm"] = "lexicon"


def build_app(settings: MapperSettings | None = None) -> FastAPI:
    settings = settings or MapperSettings()
    return create_app(settings, build_handlers, title="RadCurate mapper")
