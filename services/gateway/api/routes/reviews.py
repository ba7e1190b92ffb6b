"""The reviewer's worklist, the next assignment, and voting."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response, status
from psycopg.errors import UniqueViolation
from pydantic import BaseModel, Field

from services.common import metrics, outbox
from services.common.contracts import CellGrade, Finding, Protocol, SuggestedLabel, Verdict, VoteCast
from services.common.db import unit_of_work
from services.common.taxonomy import load_taxonomy
from services.gateway.auth import Reviewer
from services.gateway.deps import Res
from services.gateway.grading import GRADES, check_grades, grid_view
from services.gateway.omissions import CONFIRMATION_TYPE, describe, omissions
from services.gateway.problems import Problem

router = APIRouter(prefix="/api/v1/reviews", tags=["reviews"])


class Assignment(BaseModel):
    assignment_id: str
    study_id: str
    status: str
    difficulty: str
    suggested: list[SuggestedLabel]
    unmapped_findings: list[Finding]
    image_url: str
    dicom_url: str
    study_url: str
    discussion_url: str
    label_ids: list[str] = Field(description="The taxonomy a vote may add from (lumbar: the 25 cell ids).")
    protocol: Protocol = Protocol.CXR
    grading: list[dict] | None = Field(None, description="Lumbar: the 25-cell grid prefilled from the suggestion.")
    grades: list[str] | None = Field(None, description="Lumbar: the grades a cell may take, in order.")
    series_url: str | None = Field(None, description="Lumbar: the study's series and instances.")


class VoteIn(BaseModel):
    verdict: Verdict | None = Field(None, description="CXR: the verdict on the suggested labels.")
    grades: list[CellGrade] | None = Field(None, max_length=64, description="Lumbar: a grade (and point) per cell.")
    added_labels: list[str] = Field(default_factory=list, max_length=64, description="Labels the suggestion missed.")
    removed_labels: list[str] = Field(default_factory=list, max_length=64, description="Suggested labels that are wrong.")
    comment: str = Field("", max_length=4000)
    seconds_spent: float | None = Field(None, ge=0, le=86_400)
    confirm: bool = Field(False, description="Accept the omission warnings a previous attempt answered with (409).")


class VoteOut(BaseModel):
    vote_id: str
    assignment_id: str
    study_id: str
    verdict: Verdict | None
    added_labels: list[str]
    removed_labels: list[str]
    confirmed_omissions: list[dict] = Field(default_factory=list)
    grades: list[CellGrade] | None = None


_COLUMNS = "assignment_id, study_id, status, difficulty, suggested, unmapped, protocol"


def _view(row: dict) -> Assignment:
    if row["protocol"] == Protocol.LUMBAR:
        return _lumbar_view(row)
    sid = row["study_id"]
    return Assignment(
        assignment_id=row["assignment_id"], study_id=sid, status=row["status"],
        difficulty=row["difficulty"], suggested=row["suggested"], unmapped_findings=row["unmapped"],
        image_url=f"/api/v1/studies/{sid}/image", dicom_url=f"/api/v1/studies/{sid}/dicom",
        study_url=f"/api/v1/studies/{sid}", discussion_url=f"/api/v1/studies/{sid}/discussion",
        label_ids=list(load_taxonomy("cxr").label_ids), protocol=row["protocol"],
    )


def _lumbar_view(row: dict) -> Assignment:
    """The grading task: the grid prefilled from the suggestion, and where the series are."""
    sid = row["study_id"]
    grid = grid_view(row["suggested"])
    base = f"/api/v1/studies/{sid}"
    return Assignment(
        assignment_id=row["assignment_id"], study_id=sid, status=row["status"], difficulty=row["difficulty"],
        suggested=row["suggested"], unmapped_findings=row["unmapped"], image_url=f"{base}/image",
        dicom_url=f"{base}/dicom", study_url=base, discussion_url=f"{base}/discussion",
        label_ids=[c["cell_id"] for c in grid], protocol=Protocol.LUMBAR, grading=grid, grades=list(GRADES),
        series_url=f"{base}/series")


@router.get("")
async def worklist(user: Reviewer, res: Res, state: Literal["open", "voted"] = "open",
                   limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[Assignment]:
    """The caller's assignments (open by default), oldest first."""
    async with res.pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM assignments WHERE reader_id = %s AND status = %s"
            " ORDER BY assigned_at, study_id LIMIT %s", (user.user_id, state, limit))
        return [_view(r) for r in await cur.fetchall()]


@router.get("/next", response_model=Assignment, responses={204: {"description": "Nothing left to read."}})
async def next_assignment(user: Reviewer, res: Res,
                          after: Annotated[str | None, Query(max_length=64)] = None) -> Assignment | Response:
    """The caller's oldest open assignment, or 204 when the worklist is empty. `after` skips one
    assignment (the one on screen), so a page can prefetch the study that comes next."""
    async with res.pool.connection() as conn:
        cur = await conn.execute(
            f"UPDATE assignments SET opened_at = coalesce(opened_at, now()) WHERE assignment_id = ("
            f" SELECT assignment_id FROM assignments WHERE reader_id = %s AND status = 'open'"
            f" AND assignment_id IS DISTINCT FROM %s ORDER BY assigned_at, study_id LIMIT 1) RETURNING {_COLUMNS}",
            (user.user_id, after))
        row = await cur.fetchone()
    if row is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return _view(row)


def _check_labels(vote: VoteIn, suggested: set[str]) -> None:
    known = set(load_taxonomy("cxr").label_ids)
    unknown = sorted((set(vote.added_labels) | set(vote.removed_labels)) - known)
    if unknown:
        raise Problem(422, f"unknown label(s): {', '.join(unknown)}", unknown_labels=unknown)
    if set(vote.added_labels) & suggested:
        raise Problem(422, f"cannot add labels already suggested: {', '.join(sorted(set(vote.added_labels) & suggested))}")
    if set(vote.removed_labels) - suggested:
        raise Problem(422, f"cannot remove labels that were not suggested: {', '.join(sorted(set(vote.removed_labels) - suggested))}")
    if vote.verdict == Verdict.AGREE_ALL and (vote.added_labels or vote.removed_labels):
        raise Problem(422, "agree_all means no corrections; use agree_mostly or disagree to add or remove labels")


def _check_omissions(vote: VoteIn, a: dict) -> list[dict]:
    """The warnings this vote raises; unconfirmed ones stop it with a 409 that lists them."""
    asks = omissions(a["suggested"], a["unmapped"], vote.added_labels, vote.removed_labels)
    if asks and not vote.confirm:
        raise Problem(409, describe(asks), type_=CONFIRMATION_TYPE, confirmations=asks)
    return asks


@router.post("/{assignment_id}/vote", status_code=status.HTTP_201_CREATED,
             responses={409: {"description": "Already voted, read moved away, or omissions to confirm."}})
async def vote(assignment_id: str, body: VoteIn, user: Reviewer, res: Res, response: Response,
               idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> VoteOut:
    """Cast the caller's vote on one assignment. With the same Idempotency-Key a retry returns the
    original vote (200); a second, different vote is refused (409). A vote that removes a label the
    report states as present, or leaves an unmapped finding without adding a label, is answered
    with a 409 confirmation request until it is sent again with `confirm: true`."""
    async with unit_of_work(res.pool) as conn:
        a = await _lock_assignment(conn, assignment_id, user.user_id)
        if a["vote_id"] is not None:
            if idempotency_key and a["idempotency_key"] == idempotency_key:
                response.status_code = status.HTTP_200_OK
                return _vote_out(a)
            raise Problem(409, "you have already voted on this assignment", vote_id=a["vote_id"])
        if a["status"] == "expired":
            raise Problem(409, "this read's lease ran out and the study was re-offered to another reader")
        event, confirmed = await _judgement(conn, body, a, assignment_id, user.user_id)
        try:
            await _insert_vote(conn, event, idempotency_key, confirmed)
        except UniqueViolation as exc:  # a concurrent duplicate lost the race
            raise Problem(409, "you have already voted on this assignment") from exc
        await outbox.record(conn, [event])
    res.relay.notify()
    metrics.VOTES.labels(body.verdict.value if body.verdict else "graded").inc()
    metrics.READS.inc()
    return VoteOut(vote_id=event.vote_id, assignment_id=assignment_id, study_id=event.study_id,
                   verdict=event.verdict, added_labels=event.added_labels, removed_labels=event.removed_labels,
                   confirmed_omissions=confirmed, grades=event.grades)


async def _judgement(conn, body: VoteIn, a: dict, assignment_id: str, reader_id: str) -> tuple[VoteCast, list[dict]]:
    """The vote event, checked the protocol's way: a verdict with label corrections (CXR), or a
    full grade grid with points on this study's own instances (lumbar)."""
    common = dict(study_id=a["study_id"], vote_id=str(uuid.uuid4()), assignment_id=assignment_id,
                  reader_id=reader_id, comment=body.comment,
                  seconds_spent=body.seconds_spent if body.seconds_spent is not None else a["open_seconds"])
    if a["protocol"] == Protocol.LUMBAR:
        if body.grades is None or body.verdict is not None:
            raise Problem(422, "a lumbar read is voted with `grades` (one per cell), not a verdict")
        check_grades(body.grades, await _instances(conn, a["study_id"]))
        grades = sorted(body.grades, key=lambda g: g.cell_id)
        return VoteCast(protocol=Protocol.LUMBAR, grades=grades, **common), []
    if body.verdict is None or body.grades is not None:
        raise Problem(422, "this read is voted with a `verdict` on the suggested labels, not grades")
    _check_labels(body, {s["label_id"] for s in a["suggested"]})
    confirmed = _check_omissions(body, a)
    return VoteCast(verdict=body.verdict, added_labels=sorted(set(body.added_labels)),
                    removed_labels=sorted(set(body.removed_labels)), **common), confirmed


async def _instances(conn, study_id: str) -> set[tuple[str, int]]:
    cur = await conn.execute("SELECT series_instance_uid, instance_number FROM study_objects WHERE study_id = %s",
                             (study_id,))
    return {(r["series_instance_uid"], r["instance_number"]) for r in await cur.fetchall()}


async def _lock_assignment(conn, assignment_id: str, user_id: str) -> dict:
    """The assignment (locked) with its vote if any, in one round trip; refuses other readers'."""
    cur = await conn.execute(
        "SELECT a.study_id, a.reader_id, a.status, a.suggested, a.unmapped, a.protocol, v.grades,"
        " extract(epoch FROM now() - a.opened_at)::float8 AS open_seconds, v.vote_id, v.assignment_id,"
        " v.verdict, v.added_labels, v.removed_labels, v.idempotency_key, v.confirmed_omissions"
        " FROM assignments a LEFT JOIN votes v USING (assignment_id) WHERE a.assignment_id = %s FOR UPDATE OF a",
        (assignment_id,))
    a = await cur.fetchone()
    # Someone else's assignment answers exactly like a missing one: a 403 would tell the caller
    # that the assignment exists, i.e. who co-reads which study.
    if a is None or a["reader_id"] != user_id:
        raise Problem(404, f"no assignment {assignment_id!r} on your worklist")
    return a


async def _insert_vote(conn, e: VoteCast, idempotency_key: str | None, confirmed: list[dict]) -> None:
    await conn.execute(
        "WITH done AS (UPDATE assignments SET status = 'voted' WHERE assignment_id = %s)"
        " INSERT INTO votes (vote_id, assignment_id, study_id, reader_id, verdict, added_labels, removed_labels,"
        " comment, seconds_spent, idempotency_key, confirmed_omissions, grades)"
        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (e.assignment_id, e.vote_id, e.assignment_id, e.study_id, e.reader_id, e.verdict and e.verdict.value,
         json.dumps(e.added_labels), json.dumps(e.removed_labels), e.comment, e.seconds_spent, idempotency_key,
         json.dumps(confirmed), json.dumps([g.model_dump(mode="json") for g in e.grades]) if e.grades else None))


def _vote_out(row: dict) -> VoteOut:
    return VoteOut(vote_id=row["vote_id"], assignment_id=row["assignment_id"], study_id=row["study_id"],
                   verdict=row["verdict"], added_labels=row["added_labels"], removed_labels=row["removed_labels"],
                   confirmed_omissions=row["confirmed_omissions"] or [], grades=row["grades"])

