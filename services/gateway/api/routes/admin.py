"""Curator operations: request sampling and releases, watch progress, export votes."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from services.common import outbox, protocols
from services.common.contracts import ProtocolName, SamplingPlan, SamplingRequested, SelectionPlan, SelectionRequested
from services.common.db import unit_of_work
from services.common.protocols import DEFAULT_PROTOCOL
from services.gateway.api.models import RequestBody
from services.gateway.auth import Curator, Role
from services.gateway.deps import Res
from services.gateway.judgements import judgement_fields
from services.gateway.problems import Problem
from services.gateway.repo import progress as progress_repo
from services.gateway.repo import releases, sampling_runs, users

router = APIRouter(prefix="/api/v1", tags=["curation"])


class SamplingRequest(RequestBody):
    plan: SamplingPlan = SamplingPlan()
    panel: list[str] | None = Field(None, description="Reader user ids; default: every active reviewer.")
    protocol: ProtocolName = Field(DEFAULT_PROTOCOL, description="A registered protocol's name.")
    capacity: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="Per reader: the most studies they may hold in total.")
    exclusions: dict[str, list[str]] = Field(
        default_factory=dict, description="Per reader: study ids they must not read (own patients, own site).")


class SamplingAccepted(BaseModel):
    run_id: str
    panel: list[str]
    min_pool_size: int


class ReleaseRequest(RequestBody):
    release_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    plan: SelectionPlan = SelectionPlan()
    protocol: ProtocolName = Field(DEFAULT_PROTOCOL, description="A registered protocol's name.")


def check_plan_labels(protocol: str, plan: SelectionPlan) -> None:
    """422 when the plan's per-label bounds name labels outside the protocol's benchmark labels."""
    known = protocols.get(protocol).benchmark_labels()
    if known is not None:  # e.g. lumbar's are cell:grade pairs: the selection names any it cannot find
        unknown = sorted(set(plan.label_bounds) - set(known))
        if unknown:
            raise Problem(422, f"plan.label_bounds names labels outside the {protocol} taxonomy:"
                               f" {', '.join(unknown)}")


async def _panel(conn, requested: list[str] | None) -> list[str]:
    reviewers = await users.active_ids(conn, Role.REVIEWER.value)
    if requested is None:
        return reviewers
    unknown = sorted(set(requested) - set(reviewers))
    if unknown:
        raise Problem(422, f"not active reviewers: {', '.join(unknown)}")
    return sorted(set(requested))


@router.post("/sampling-runs", status_code=status.HTTP_202_ACCEPTED)
async def request_sampling(body: SamplingRequest, _: Curator, res: Res) -> SamplingAccepted:
    """Ask the sampler for a review sample. It runs once every ingested study is in its pool."""
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    async with unit_of_work(res.pool) as conn:
        panel = await _panel(conn, body.panel)
        strangers = sorted((set(body.capacity) | set(body.exclusions)) - set(panel))
        if strangers:
            raise Problem(422, f"capacity/exclusions name readers outside the panel: {', '.join(strangers)}")
        if len(panel) < body.plan.readers_per_study:
            raise Problem(422, f"the panel has {len(panel)} reviewer(s);"
                               f" {body.plan.readers_per_study} per study needed")
        min_pool = await progress_repo.ingested(conn, body.protocol) - await progress_repo.sampled(conn, body.protocol)
        if min_pool <= 0:
            raise Problem(422, "no unsampled studies: ingest studies first")
        cmd = SamplingRequested(study_id=run_id, run_id=run_id, protocol=body.protocol, plan=body.plan,
                                panel=panel, min_pool_size=min_pool, capacity=body.capacity,
                                exclusions=body.exclusions)
        await sampling_runs.insert(conn, run_id, body.plan.model_dump_json(), json.dumps(panel))
        await outbox.record(conn, [cmd])
    res.relay.notify(at_once=True)  # a lone command: no vote is coming to keep it company
    return SamplingAccepted(run_id=run_id, panel=panel, min_pool_size=min_pool)


@router.post("/releases", status_code=status.HTTP_202_ACCEPTED)
async def request_release(body: ReleaseRequest, _: Curator, res: Res) -> dict:
    """Ask consensus to select the benchmark from accepted studies and release it."""
    release_id = body.release_id or f"release-{uuid.uuid4().hex[:8]}"
    check_plan_labels(body.protocol, body.plan)
    async with unit_of_work(res.pool) as conn:
        if await releases.exists(conn, release_id):
            raise Problem(409, f"release {release_id!r} already exists; releases are immutable")
        funnel = await progress_repo.funnel(conn, body.protocol)
        cmd = SelectionRequested(study_id=release_id, release_id=release_id, protocol=body.protocol,
                                 plan=body.plan,
                                 funnel={"ingested": funnel["ingested"], "suggested": funnel["suggested"]})
        await releases.insert_requested(conn, release_id, body.protocol)
        await outbox.record(conn, [cmd])
    res.relay.notify(at_once=True)  # a lone command: not held for the votes' quiet gap
    return {"release_id": release_id, "status": "requested"}


@router.get("/progress")
async def progress(_: Curator, res: Res, protocol: ProtocolName = DEFAULT_PROTOCOL) -> dict:
    """The protocol's funnel so far, and per reader of its studies: open, done and moved-away
    reads, and time per read (the reader's own `seconds_spent`, else from opening the study to the vote)."""
    async with res.pool.connection() as conn:
        funnel = await progress_repo.funnel(conn, protocol)
        readers = await progress_repo.readers(conn, protocol)
    return {"funnel": funnel, "readers": readers}


@router.get("/votes")
async def export_votes(_: Curator, res: Res) -> list[dict]:
    """Every vote, for analysis outside RadCurate."""
    async with res.pool.connection() as conn:
        rows = await progress_repo.all_votes(conn)
    return [judgement_fields({**r, "cast_at": r["cast_at"].isoformat()}) for r in rows]
