"""Consensus service: decides each study from its votes; selects, splits and releases the benchmark;
adjudicates, reports agreement and scores holdout evaluations."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.common.runtime import Resources, create_app
from services.common.settings import ServiceSettings
from services.consensus.gauges import refresh_forever
from services.consensus.handlers import build_handlers
from services.consensus.release_ahead import ReleaseAhead


class ConsensusSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RADCURATE_CONSENSUS_", extra="ignore")

    service_name: str = "consensus"
    rules_file: str | None = None  # consensus rules per protocol; default: services/consensus/rules.yaml
    evaluation_bootstrap: int = 1000  # bootstrap replicates behind each evaluation's 95% intervals
    gauge_refresh_seconds: float = 15.0
    # Check each accepted study's objects when it is decided, so that a release reuses the checks
    # (release_ahead.py); off, every release reads and checks all its objects itself. Off by
    # default: it checks every accepted study (a release selects ~a third of them). Session 8
    # measured ~2.5 ms of CPU per check, ~0.9 ms more per vote at a saturated panel (2.6-2.7
    # against 1.77 ms, every process but the client). With the lean GET, rounds gathered every
    # 0.5 s and kept threads (session 9, two pairs at load 10-18) it is ~0.5 ms more per vote
    # (consensus +0.24-0.27, the S3 server +0.23-0.24: about half of it the server's GET), which
    # still puts the quiet 1.77 ms over the 2 ms target. The accepted studies and the agreement
    # report are kept ahead either way.
    check_ahead: bool = False


def _start_tasks(res: Resources[ConsensusSettings]) -> None:
    seconds = res.settings.gauge_refresh_seconds
    res.tasks.append(asyncio.create_task(refresh_forever(res.pool, seconds), name="gauges"))
    ahead = res.extra.get("release_ahead")
    if isinstance(ahead, ReleaseAhead):
        res.tasks.append(asyncio.create_task(ahead.run_forever(res.pool), name="release-ahead"))


def build_app(settings: ConsensusSettings | None = None) -> FastAPI:
    settings = settings or ConsensusSettings()
    return create_app(settings, build_handlers, on_start=_start_tasks, title="RadCurate consensus")
