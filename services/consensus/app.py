"""Consensus service: decides each study from its votes; selects, splits and releases the benchmark."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.common.runtime import create_app
from services.common.settings import ServiceSettings
from services.consensus.handlers import build_handlers


class ConsensusSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RADCURATE_CONSENSUS_", extra="ignore")

    service_name: str = "consensus"
    min_agree_all: int = 2  # CXR rule: accepted iff at least this many readers chose agree_all


def build_app(settings: ConsensusSettings | None = None) -> FastAPI:
    settings = settings or ConsensusSettings()
    return create_app(settings, build_handlers, title="RadCurate consensus")
