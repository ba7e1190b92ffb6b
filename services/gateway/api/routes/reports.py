"""Curator views computed by consensus: the agreement / AI-vs-expert report, a release preview,
and adjudication (with the decision it rules on).

The figures live in the consensus schema, which the gateway never reads: a request becomes a
`report-requested` command and the answer arrives as `report-ready`. The endpoint waits a few
seconds for it so a curator usually gets the report in one call, else 202 and a link to poll.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import Field

from services.common import outbox, protocols
from services.common.contracts import AdjudicationRequested, CellGrade, ProtocolName, ReportRequested, SelectionPlan
from services.common.db import unit_of_work
from services.common.protocols import DEFAULT_PROTOCOL, JudgementRejected
from services.gateway.api.models import RequestBody
from services.gateway.api.routes.admin import check_plan_labels
from services.gateway.auth import Curator
from services.gateway.deps import Res
from services.gateway.problems import Problem
from services.gateway.repo import decisions, reports, studies
from services.gateway.repo.conn import Conn, Row

router = APIRouter(prefix="/api/v1", tags=["curation"])


class AdjudicationIn(RequestBody):
    study_id: str
    accepted: bool
    labels: list[str] = Field(default_factory=list, description="The labels that enter the benchmark if accepted.")
    cells: list[CellGrade] = Field(default_factory=list, max_length=64,
                                   description="A grid protocol: the disputed cells' grades (and points)"
                                               " set by the curator.")
    note: str = Field("", max_length=4000)


async def wait_for_row(res, read: Callable[[Conn], Awaitable[Row | None]], done, seconds: float) -> dict | None:
    """Poll one row (`read` on a fresh connection) until `done(row)` or the time is up; returns
    the last row read."""
    deadline = time.monotonic() + seconds
    while True:
        async with res.pool.connection() as conn:
            row = await read(conn)
        if row is None or done(row) or time.monotonic() >= deadline:
            return row
        await asyncio.sleep(0.2)


class ReleasePreviewIn(RequestBody):
    plan: SelectionPlan = SelectionPlan()
    protocol: ProtocolName = Field(DEFAULT_PROTOCOL, description="A registered protocol's name.")


def _report_view(row: dict, response: Response) -> dict:
    if row["status"] != "ready":
        response.status_code = status.HTTP_202_ACCEPTED
        return {"report_id": row["report_id"], "status": "pending",
                "href": f"/api/v1/reports/{row['kind']}/{row['report_id']}"}
    return {"report_id": row["report_id"], "status": "ready", "protocol": row["protocol"],
            "ready_at": row["ready_at"].isoformat(), **row["body"]}


@router.get("/reports/agreement", responses={202: {"description": "Still computing; poll `href`."}})
async def agreement_report(user: Curator, res: Res, response: Response, protocol: ProtocolName = DEFAULT_PROTOCOL,
                           wait: Annotated[float, Query(ge=0, le=60)] = 15) -> dict:
    """Fleiss' kappa per label, verdict shares, per-reader stats and AI-vs-expert tables (by
    model and by difficulty tier), freshly computed by the consensus service."""
    report_id = f"report-{uuid.uuid4().hex[:12]}"
    async with unit_of_work(res.pool) as conn:
        await reports.insert_agreement(conn, report_id, protocol, user.user_id)
        await outbox.record(conn, [ReportRequested(study_id=report_id, report_id=report_id, protocol=protocol)])
    res.relay.notify()
    row = await wait_for_row(res, lambda conn: reports.get(conn, report_id), lambda r: r["status"] == "ready", wait)
    return _report_view(row, response)


@router.get("/reports/agreement/{report_id}", responses={202: {"description": "Still computing."}})
async def get_agreement_report(report_id: str, _: Curator, res: Res, response: Response) -> dict:
    return await _stored_report(res, "agreement", report_id, response)


@router.post("/releases/preview", responses={202: {"description": "Still computing; poll `href`."}})
async def preview_release(body: ReleasePreviewIn, user: Curator, res: Res, response: Response,
                          wait: Annotated[float, Query(ge=0, le=60)] = 15) -> dict:
    """What a release with this plan would hold if requested now — the dataset card it would
    carry (counts, per-split prevalence, composition, unmet quotas) — computed by consensus with
    the release's own selection and split; nothing is released or written. An unsatisfiable plan
    or too few accepted studies come back as `card: null` with `error`."""
    check_plan_labels(body.protocol, body.plan)
    report_id = f"preview-{uuid.uuid4().hex[:12]}"
    async with unit_of_work(res.pool) as conn:
        await reports.insert_agreement(conn, report_id, body.protocol, user.user_id, kind="release-preview")
        await outbox.record(conn, [ReportRequested(study_id=report_id, report_id=report_id, protocol=body.protocol,
                                                   kind="release-preview", plan=body.plan)])
    res.relay.notify()
    row = await wait_for_row(res, lambda conn: reports.get(conn, report_id), lambda r: r["status"] == "ready", wait)
    return _preview_view(_report_view(row, response))


@router.get("/reports/release-preview/{report_id}", responses={202: {"description": "Still computing."}})
async def get_release_preview(report_id: str, _: Curator, res: Res, response: Response) -> dict:
    return _preview_view(await _stored_report(res, "release-preview", report_id, response))


def _preview_view(view: dict) -> dict:
    return view if view["status"] != "ready" else {"card": None, "error": None, **view}


async def _stored_report(res, kind: str, report_id: str, response: Response) -> dict:
    async with res.pool.connection() as conn:
        row = await reports.get(conn, report_id)
    if row is None or row["kind"] != kind:
        raise Problem(404, f"no {kind} report {report_id!r}")
    return _report_view(row, response)


@router.get("/decisions/{study_id}")
async def decision(study_id: str, _: Curator, res: Res) -> dict:
    """A decided study's decision as the curator rules on it: accepted, labels, rule, and for a
    grid protocol its cells (grade, how decided, `adjudicate` for a cell the rule held) and the
    grades a cell may take; `cells` and `grades` are null for a protocol without cells."""
    async with res.pool.connection() as conn:
        row = await decisions.get(conn, study_id)
    if row is None:
        raise Problem(404, f"study {study_id!r} has no decision")
    protocol = row["protocol"] or DEFAULT_PROTOCOL
    grades = protocols.get(protocol).review_view([], f"/api/v1/studies/{study_id}").get("grades")
    return {"study_id": study_id, "protocol": protocol, "accepted": row["accepted"], "labels": row["labels"],
            "rule": row["rule"], "decided_at": row["decided_at"].isoformat(), "cells": row["cells"],
            "grades": grades}


@router.post("/adjudications", status_code=status.HTTP_202_ACCEPTED)
async def adjudicate(body: AdjudicationIn, user: Curator, res: Res) -> dict:
    """Settle a decided study (typically one flagged for adjudication). Consensus records the
    ruling beside the rule's decision, with who and why, and it becomes the study's decision.
    The study's protocol checks the ruling: labels of its taxonomy, or a grid protocol's cells."""
    if body.labels and not body.accepted:
        raise Problem(422, "a rejected study has no benchmark labels; send accepted=true or no labels")
    adjudication_id = f"adj-{uuid.uuid4().hex[:12]}"
    cells = [c.model_dump(mode="json") for c in body.cells]
    async with unit_of_work(res.pool) as conn:
        decided = await decisions.decided(conn, body.study_id)
        if decided is None:
            raise Problem(404, f"study {body.study_id!r} has no decision to adjudicate")
        protocol = protocols.get(decided["protocol"] or DEFAULT_PROTOCOL)
        try:
            # What the ruling releases (a grid protocol's findings follow from its cells); the
            # command carries the request itself, which consensus checks again against the rule's cells.
            instances = await studies.instances(conn, body.study_id)
            labels, _ = protocol.adjudicate(body.accepted, body.labels, cells, None, instances)
        except JudgementRejected as exc:
            raise Problem(422, exc.detail, **exc.extra) from None
        await decisions.insert_adjudication(conn, adjudication_id, body.study_id, user.user_id, body.accepted, labels,
                                            body.note)
        await outbox.record(conn, [AdjudicationRequested(
            study_id=body.study_id, adjudication_id=adjudication_id, curator_id=user.user_id,
            accepted=body.accepted, labels=sorted(set(body.labels)), note=body.note, cells=body.cells)])
    res.relay.notify()
    return {"adjudication_id": adjudication_id, "study_id": body.study_id, "status": "requested"}
