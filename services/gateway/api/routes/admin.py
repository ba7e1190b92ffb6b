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
from services.gateway import judgements
from services.gateway.api.models import RequestBody
from services.gateway.auth import Curator, Role
from services.gateway.deps import Res
from services.gateway.judgements import judgement_fields
from services.gateway.problems import Problem

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


async def _panel(conn, requested: list[str] | None) -> list[str]:
    cur = await conn.execute("SELECT user_id FROM users WHERE active AND role = %s ORDER BY user_id",
                             (Role.REVIEWER.value,))
    reviewers = [r["user_id"] for r in await cur.fetchall()]
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
            raise Problem(422, f"the panel has {len(panel)} reviewer(s); {body.plan.readers_per_study} per study needed")
        cur = await conn.execute("SELECT count(*) AS n FROM studies WHERE protocol = %s", (body.protocol,))
        ingested = (await cur.fetchone())["n"]
        cur = await conn.execute(
            "SELECT count(DISTINCT study_id) AS n FROM assignments a JOIN studies s USING (study_id)"
            " WHERE s.protocol = %s", (body.protocol,))
        min_pool = ingested - (await cur.fetchone())["n"]
        if min_pool <= 0:
            raise Problem(422, "no unsampled studies: ingest studies first")
        cmd = SamplingRequested(study_id=run_id, run_id=run_id, protocol=body.protocol, plan=body.plan,
                                panel=panel, min_pool_size=min_pool, capacity=body.capacity,
                                exclusions=body.exclusions)
        await conn.execute("INSERT INTO sampling_runs (run_id, plan, panel) VALUES (%s, %s, %s)",
                           (run_id, body.plan.model_dump_json(), json.dumps(panel)))
        await outbox.record(conn, [cmd])
    res.relay.notify()
    return SamplingAccepted(run_id=run_id, panel=panel, min_pool_size=min_pool)


@router.post("/releases", status_code=status.HTTP_202_ACCEPTED)
async def request_release(body: ReleaseRequest, _: Curator, res: Res) -> dict:
    """Ask consensus to select the benchmark from accepted studies and release it."""
    release_id = body.release_id or f"release-{uuid.uuid4().hex[:8]}"
    known = protocols.get(body.protocol).benchmark_labels()
    if known is not None:  # e.g. lumbar's are cell:grade pairs: the selection names any it cannot find
        unknown = sorted(set(body.plan.label_bounds) - set(known))
        if unknown:
            raise Problem(422, f"plan.label_bounds names labels outside the {body.protocol} taxonomy:"
                               f" {', '.join(unknown)}")
    async with unit_of_work(res.pool) as conn:
        cur = await conn.execute("SELECT 1 FROM releases WHERE release_id = %s", (release_id,))
        if await cur.fetchone():
            raise Problem(409, f"release {release_id!r} already exists; releases are immutable")
        funnel = await _funnel(conn, body.protocol)
        cmd = SelectionRequested(study_id=release_id, release_id=release_id, protocol=body.protocol,
                                 plan=body.plan, funnel={"ingested": funnel["ingested"], "suggested": funnel["suggested"]})
        await conn.execute("INSERT INTO releases (release_id, protocol, status) VALUES (%s, %s, 'requested')",
                           (release_id, body.protocol))
        await outbox.record(conn, [cmd])
    res.relay.notify()
    return {"release_id": release_id, "status": "requested"}


async def _funnel(conn, protocol: str) -> dict:
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM studies WHERE protocol = %(p)s) AS ingested,"
        " (SELECT count(*) FROM suggestions g JOIN studies s USING (study_id) WHERE s.protocol = %(p)s) AS suggested,"
        " (SELECT count(DISTINCT study_id) FROM assignments WHERE protocol = %(p)s) AS sampled,"
        " (SELECT count(*) FROM assignments WHERE status <> 'expired' AND protocol = %(p)s) AS assignments,"
        " (SELECT count(*) FROM votes v JOIN studies s USING (study_id) WHERE s.protocol = %(p)s) AS votes,"
        " (SELECT count(*) FROM decisions d JOIN studies s USING (study_id) WHERE s.protocol = %(p)s) AS decided,"
        " (SELECT count(*) FROM decisions d JOIN studies s USING (study_id) WHERE d.accepted AND s.protocol = %(p)s)"
        " AS accepted", {"p": protocol})
    return dict(await cur.fetchone())


@router.get("/progress")
async def progress(_: Curator, res: Res, protocol: ProtocolName = DEFAULT_PROTOCOL) -> dict:
    """The protocol's funnel so far, and per reader of its studies: open, done and moved-away
    reads, and time per read (the reader's own `seconds_spent`, else from opening the study to the vote)."""
    async with res.pool.connection() as conn:
        funnel = await _funnel(conn, protocol)
        cur = await conn.execute(
            "SELECT a.reader_id, count(*) FILTER (WHERE a.status <> 'expired') AS assigned,"
            " count(*) FILTER (WHERE a.status = 'open') AS open, count(v.vote_id) AS done,"
            " count(*) FILTER (WHERE a.status = 'expired') AS expired,"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY v.seconds_spent) AS median_seconds,"
            " avg(v.seconds_spent) AS mean_seconds, sum(v.seconds_spent) AS total_seconds"
            " FROM assignments a LEFT JOIN votes v USING (assignment_id) WHERE a.protocol = %s"
            " GROUP BY a.reader_id ORDER BY a.reader_id", (protocol,))
        readers = await cur.fetchall()
    return {"funnel": funnel, "readers": readers}


@router.get("/votes")
async def export_votes(_: Curator, res: Res) -> list[dict]:
    """Every vote, for analysis outside RadCurate."""
    async with res.pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT v.vote_id, v.study_id, v.reader_id, v.comment, v.seconds_spent, v.cast_at, {judgements.SELECT}"
            " FROM votes v ORDER BY v.cast_at, v.vote_id")
        rows = await cur.fetchall()
    return [judgement_fields({**r, "cast_at": r["cast_at"].isoformat()}) for r in rows]
