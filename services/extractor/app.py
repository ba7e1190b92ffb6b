"""Extractor service: radiology report text in, abnormal findings out."""

from __future__ import annotations

from typing import Literal

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.common.runtime import create_app
from services.common.settings import LlmSettings, ServiceSettings
from services.extractor.handlers import build_handlers


class ExtractorLlmSettings(LlmSettings):
    model_config = SettingsConfigDict(env_prefix="RADCURATE_EXTRACTOR_", extra="ignore")

    llm_model: str = "gpt-4o"


class ExtractorSettings(ServiceSettings, ExtractorLlmSettings):
    model_config = SettingsConfigDict(env_prefix="RADCURATE_EXTRACTOR_", extra="ignore")

    service_name: str = "extractor"
    backend: Literal["rules", "llm"] = "rules"


def build_app(settings: ExtractorSettings | None = None) -> FastAPI:
    settings = settings or ExtractorSettings()
    return create_app(settings, build_handlers, title="RadCurate extractor")
