"""Sampler service: keeps the candidate pool; on request draws a review sample and assigns readers."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.common.runtime import create_app
from services.common.settings import ServiceSettings
from services.sampler.handlers import build_handlers


class SamplerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RADCURATE_SAMPLER_", extra="ignore")

    service_name: str = "sampler"


def build_app(settings: SamplerSettings | None = None) -> FastAPI:
    settings = settings or SamplerSettings()
    return create_app(settings, build_handlers, title="RadCurate sampler")
