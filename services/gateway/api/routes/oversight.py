"""Curator oversight: where every study stands, what each sampling run drew, and moving a read.

A reassignment is a command to the sampler, which owns who reads what: it picks (or checks) the
new reader under the same rules as an expired lease, and the move comes back as review-reoffered.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from pydantic import Field

from services.common import outbox
from services.common.contracts import ReassignmentRequested
from services.common.db import unit_of_work
from services.gateway.api.models import RequestBody, iso_row
from services.gateway.auth import Curator, Role
from services.gateway.deps import Res
from services.gateway.problems import Problem
from services.gateway.repo import assignments, progress, users
from services.gateway.repo import sampling_runs as runs

router = APIRouter(prefix="/api/v1", tags=["curation"])

StudyState = Literal["assigned", "in_review", "voted", "accepted", "not_accepted"]

@router.get("/progress/studies")
async def study_states(_: Curator, res: Res, state: StudyState | None = None,
                       limit: Annotated[int, Query(ge=1, le=5000)] = 500,
                       offset: Annotated[int, Query(ge=0)] = 0) -> list[dict]:
    """Per sampled study: its state, its readers and their read status, and why it was sampled."""
    async with res.pool.connection() as conn:
        return await progress.study_states(conn, state, limit, offset)


@router.get("/sampling-runs")
async def sampling_runs(_: Curator, res: Res) -> list[dict]:
    """Every sampling run and its outcome (status stays 'requested' until the sampler reports)."""
    async with res.pool.connection() as conn:
        return [iso_row(r) for r in await runs.all_runs(conn)]


@router.get("/sampling-runs/{run_id}")
async def sampling_run(run_id: str, _: Curator, res: Res) -> dict:
    """One run: plan, panel, unmet quotas, difficulty tiers, label counts, and each study's reason."""
    async with res.pool.connection() as conn:
        run = await runs.get(conn, run_id)
        if run is None:
            raise Problem(404, f"no sampling run {run_id!r}")
        studies = await runs.studies_of(conn, run_id)
    return {**iso_row(run), "studies": studies}


class ReassignIn(RequestBody):
    to_reader: str | None = Field(None, max_length=64, description="Default: the least-loaded eligible reader.")
    reason: str = Field("", max_length=500)


@router.post("/assignments/{assignment_id}/reassign", status_code=status.HTTP_202_ACCEPTED)
async def reassign(assignment_id: str, body: ReassignIn, actor: Curator, res: Res) -> dict:
    """Move an open read to another reader. Refused for a read already voted or moved, and for a
    reader who is not an active reviewer or has already had the study (they would not read blind)."""
    async with unit_of_work(res.pool) as conn:
        a = await assignments.lock(conn, assignment_id)
        if a is None:
            raise Problem(404, f"no assignment {assignment_id!r}")
        if a["status"] != "open":
            raise Problem(409, f"the read is {a['status']}; only an open read can be reassigned")
        if body.to_reader is not None:
            await _check_new_reader(conn, a["study_id"], body.to_reader)
        cmd = ReassignmentRequested(study_id=a["study_id"], from_reader=a["reader_id"], to_reader=body.to_reader,
                                    requested_by=actor.user_id, reason=body.reason)
        await outbox.record(conn, [cmd])
    res.relay.notify()
    return {"status": "requested", "study_id": a["study_id"], "from_reader": a["reader_id"],
            "to_reader": body.to_reader, "request_id": cmd.event_id}


async def _check_new_reader(conn, study_id: str, reader_id: str) -> None:
    if not await users.is_active_in_role(conn, reader_id, Role.REVIEWER.value):
        raise Problem(422, f"{reader_id!r} is not an active reviewer")
    if await assignments.has_had(conn, study_id, reader_id):
        raise Problem(422, f"{reader_id!r} has already had study {study_id!r}; a reader never gets a study twice")
