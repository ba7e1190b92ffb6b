"""Sampler service: keeps the candidate pool; on request draws a review sample and assigns readers."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.common.runtime import Resources, create_app
from services.common.settings import ServiceSettings
from services.sampler.handlers import DEFAULT_LEASE_SECONDS, build_handlers
from services.sampler.leases import sweep_loop


class SamplerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RADCURATE_SAMPLER_", extra="ignore")

    service_name: str = "sampler"
    # A read not voted within this long moves to another eligible reader (the paper's panel read
    # over days, so 72 h by default; tests use seconds).
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    lease_sweep_seconds: float = 2.0  # one indexed query finding nothing, when nothing is due


def _start_sweeper(res: Resources) -> None:
    res.tasks.append(asyncio.create_task(sweep_loop(res), name="lease-sweeper"))


def build_app(settings: SamplerSettings | None = None) -> FastAPI:
    settings = settings or SamplerSettings()
    return create_app(settings, build_handlers, on_start=_start_sweeper, title="RadCurate sampler")
