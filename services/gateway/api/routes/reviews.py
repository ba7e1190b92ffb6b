"""The reviewer's worklist, the next assignment, and voting."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response, status
from psycopg.errors import UniqueViolation
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.common import metrics, protocols
from services.common.contracts import CellGrade, Finding, SuggestedLabel, Verdict, VoteCast
from services.common.protocols import CurationProtocol, JudgementRejected, NeedsConfirmation, ReviewContext
from services.common.runtime import Resources
from services.gateway import judgements
from services.gateway.api.routes.studies import FACT_COLUMNS, OBJECT_VIEWS, StudyFacts, facts_of, views_of
from services.gateway.auth import Reviewer, Role
from services.gateway.deps import Res
from services.gateway.hanging import HungView
from services.gateway.opened_reads import OpenedRead, opened_reads
from services.gateway.problems import Problem
from services.gateway.repo import reviews as repo
from services.gateway.repo.conn import autocommit

router = APIRouter(prefix="/api/v1/reviews", tags=["reviews"])


class Assignment(BaseModel):
    assignment_id: str
    study_id: str
    status: str
    difficulty: str
    suggested: list[SuggestedLabel]
    unmapped_findings: list[Finding]
    image_url: str
    views: list[HungView] = Field(default_factory=list, description="A frontal and a lateral image, hung left"
                                  " to right (empty unless the study has both): each with its `instance` index.")
    dicom_url: str
    study_url: str
    discussion_url: str
    label_ids: list[str] = Field(description="The labels a vote may name (a grid protocol: its cell ids).")
    protocol: str = Field(description="The study's curation protocol; it decides the fields below and of a vote.")
    grading: list[dict] | None = Field(None, description="A grid protocol's cells, prefilled from the suggestion.")
    grades: list[str] | None = Field(None, description="A grid protocol's grades a cell may take, in order.")
    series_url: str | None = Field(None, description="A multi-series study's series and instances.")
    verdict_rules: dict | None = Field(None, description="A verdict protocol: how many corrections each verdict"
                                       " carries (`agree_mostly_corrections`, `disagree_with_reason`), so a page"
                                       " can say so before the gateway refuses the vote (422).")
    report_text: str = Field("", description="The report the suggestion was read from, shown whole to the reader.")
    facts: StudyFacts = Field(default_factory=StudyFacts, description="View, sex, age band, date, indication.")


class VoteIn(BaseModel):
    """The vote request: the judgement's fields as the study's protocol defines them (the built-in
    protocols' are listed; a plug-in protocol's other fields are passed to it as they come). A
    field that neither the vote nor the study's protocol defines is refused (422 naming it), as in
    every other request body: see `unknown_fields`."""

    model_config = ConfigDict(extra="allow")

    verdict: Verdict | None = Field(None, description="A verdict protocol: the verdict on the suggested labels.")
    grades: list[CellGrade] | None = Field(None, max_length=64,
                                           description="A grid protocol: a grade (and point) per cell.")
    added_labels: list[str] = Field(default_factory=list, max_length=64, description="Labels the suggestion missed.")
    removed_labels: list[str] = Field(default_factory=list, max_length=64,
                                      description="Suggested labels that are wrong.")
    comment: str = Field("", max_length=4000)
    seconds_spent: float | None = Field(None, ge=0, le=86_400)
    confirm: bool = Field(False, description="Accept the omission warnings a previous attempt answered with (409).")


class VoteOut(BaseModel):
    """The vote as recorded, with its judgement's fields."""

    model_config = ConfigDict(extra="allow")

    vote_id: str
    assignment_id: str
    study_id: str
    verdict: Verdict | None = None
    added_labels: list[str] = Field(default_factory=list)
    removed_labels: list[str] = Field(default_factory=list)
    confirmed_omissions: list[dict] = Field(default_factory=list)
    grades: list[CellGrade] | None = None


_COLUMNS = ("a.assignment_id, a.study_id, a.status, a.difficulty, a.suggested, a.unmapped, a.protocol,"
            f" s.report_text, {FACT_COLUMNS}, {OBJECT_VIEWS}")


def _protocol(name: str) -> CurationProtocol:
    try:
        return protocols.get(name)
    except protocols.UnknownProtocol as exc:
        raise Problem(409, f"this study's protocol is not loaded here: {exc}") from None


def _view(row: dict) -> Assignment:
    """The assignment as the page gets it; the protocol adds what its review widget needs."""
    sid = row["study_id"]
    base = f"/api/v1/studies/{sid}"
    return Assignment(
        assignment_id=row["assignment_id"], study_id=sid, status=row["status"],
        difficulty=row["difficulty"], suggested=row["suggested"], unmapped_findings=row["unmapped"],
        image_url=f"{base}/image", views=views_of(row, f"{base}/image"), dicom_url=f"{base}/dicom", study_url=base,
        discussion_url=f"{base}/discussion",
        protocol=row["protocol"], report_text=row.get("report_text") or "", facts=facts_of(row),
        **_protocol(row["protocol"]).review_view(row["suggested"], base),
    )


def _opened_view(res: Resources[Any], reader_id: str, row: dict) -> Assignment:
    """`_view` of a read just opened for the reader, remembered for the reader's vote on it
    (opened_reads.py) once the gateway can show it."""
    view = _view(row)
    opened_reads(res.extra).remember(reader_id, row)
    return view


@router.get("")
async def worklist(user: Reviewer, res: Res, state: Literal["open", "voted"] = "open",
                   limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[Assignment]:
    """The caller's assignments (open by default), oldest first."""
    async with res.pool.connection() as conn:
        rows = await repo.open_assignments(conn, user.user_id, state, limit, _COLUMNS)
    return [_view(r) for r in rows]


@router.get("/next", response_model=Assignment, responses={204: {"description": "Nothing left to read."}})
async def next_assignment(
        user: Reviewer, res: Res,
        after: Annotated[list[Annotated[str, StringConstraints(max_length=64)]], Query(max_length=8)] = []  # noqa: B006
) -> Assignment | Response:
    """The caller's oldest open assignment, or 204 when the worklist is empty. `after` (repeatable,
    up to 8) skips assignments: the one on screen and any vote the page still holds back for its
    undo grace period, so a page can prefetch the study that really comes next."""
    assignment = await next_for(res, user.user_id, after)
    if assignment is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return assignment


async def next_for(res: Resources[Any], reader_id: str, after: list[str]) -> Assignment | None:
    """The reader's next assignment (opened now), or None: `GET /next` once its input is checked
    (here and in services/gateway/api/hot_routes.py, which serves the same call)."""
    async with res.pool.connection() as conn:
        row = await repo.open_next(conn, reader_id, after, _COLUMNS)
    return None if row is None else _opened_view(res, reader_id, row)


async def next_for_token(res: Resources[Any], token_sha256: str,
                         after: list[str]) -> tuple[dict[str, Any] | None, Assignment | None]:
    """`GET /next` for a token not in the token cache, in one statement (repo `look_up_and_open_next`):
    the token's user (users.by_token's columns, or None when the token is not valid), and, if the
    user is a reviewer, the next assignment opened now (None when there is none or the user is not
    a reviewer: nothing is opened)."""
    async with res.pool.connection() as conn:
        row = await repo.look_up_and_open_next(conn, token_sha256, Role.REVIEWER.value, after, _COLUMNS)
    if row is None:
        return None, None
    user = {k: row.pop(f"token_{k}") for k in ("user_id", "display_name", "role", "seconds_left")}
    return user, (None if row["assignment_id"] is None else _opened_view(res, user["user_id"], row))


_After = Annotated[list[Annotated[str, StringConstraints(max_length=64)]], Query(max_length=8)]


@router.post("/{assignment_id}/vote", status_code=status.HTTP_201_CREATED,
             responses={409: {"description": "Already voted, read moved away, or omissions to confirm."}})
async def vote(assignment_id: str, body: VoteIn, user: Reviewer, res: Res, response: Response,
               idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
               with_next: Annotated[bool, Query(alias="next", description=(
                   "Also answer with the caller's next assignment (`next_assignment`), opened with the"
                   " vote: one request per study instead of two."))] = False,
               after: _After = []) -> VoteOut:  # noqa: B006
    """Cast the caller's vote on one assignment. With the same Idempotency-Key a retry returns the
    original vote (200); a second, different vote is refused (409). A vote that removes a label the
    report states as present, or leaves an unmapped finding without adding a label, is answered
    with a 409 confirmation request until it is sent again with `confirm: true`.

    With `next=true` the answer also carries `next_assignment`: what `GET /next` (with the same
    `after`) would answer next, opened in the vote's own transaction, or null when nothing is left
    to read. It is absent when the gateway cannot show that assignment (`GET /next` then says why);
    a refused vote opens nothing."""
    out, replayed = await cast_vote(res, user.user_id, assignment_id, body, idempotency_key,
                                    after if with_next else None)
    if replayed:
        response.status_code = status.HTTP_200_OK
    return out


async def cast_vote(res: Resources[Any], reader_id: str, assignment_id: str, body: VoteIn,
                    idempotency_key: str | None, next_after: list[str] | None = None) -> tuple[VoteOut, bool]:
    """Record the reader's vote once its input is checked (here and in hot_routes.py): the vote as
    recorded, and whether it is the original returned again for a retry with the same key. With
    `next_after` (the assignments to skip) the answer also carries the reader's next assignment.

    A vote on a read this process opened for the reader (`GET /next` or the previous vote's next
    assignment: services/gateway/opened_reads.py) is judged from what was opened and written in one
    statement, one round trip; should that statement find the read no longer open to the reader, or
    the judgement refuse the vote, it is cast the locking way below, which answers as it always has."""
    opened = opened_reads(res.extra).take(assignment_id, reader_id)
    if opened is not None and body.seconds_spent is not None:  # the time read from the read's opening: locking
        cast = await _cast_on_opened_read(res, opened, body, idempotency_key, next_after)
        if cast is not None:
            return _recorded(res, reader_id, *cast, next_after), False
    # BEGIN travels with the locking read, and the vote's one statement with COMMIT
    # (services/gateway/repo/reviews.py), so a vote costs two round trips; asked for, the next
    # assignment is opened by the vote's own statement.
    following = None
    try:
        async with res.pool.connection() as conn:
            async with repo.vote_transaction(conn):
                a = await _lock_assignment(conn, assignment_id, reader_id)
                if a["vote_id"] is not None:
                    if idempotency_key and a["idempotency_key"] == idempotency_key:
                        replay = a
                    else:
                        raise Problem(409, "you have already voted on this assignment", vote_id=a["vote_id"])
                else:
                    replay = None
                    if a["status"] == "expired":
                        raise Problem(409, "this read's lease ran out and the study was re-offered to another reader")
                    protocol = _protocol(a["protocol"])
                    event, confirmed = await _judgement(conn, protocol, body, a, assignment_id, reader_id)
                    if next_after is None:
                        await repo.record_vote(conn, event, idempotency_key, confirmed)
                    else:
                        following = await repo.record_vote_and_open_next(conn, event, idempotency_key, confirmed,
                                                                         next_after, _COLUMNS)
            if replay is not None:  # a retry: the original vote, and (if asked) the next read as GET /next opens it
                extra = {} if next_after is None else _next_field(
                    res, reader_id, await repo.open_next(conn, reader_id, [assignment_id, *next_after], _COLUMNS))
                return _vote_out(replay, **extra), True
            next_row = await following.fetchone() if following is not None else None
    except UniqueViolation as exc:  # a concurrent duplicate lost the race (raised at COMMIT's sync)
        raise Problem(409, "you have already voted on this assignment") from exc
    return _recorded(res, reader_id, protocol, event, confirmed, next_row, next_after), False


async def _cast_on_opened_read(res: Resources[Any], opened: OpenedRead, body: VoteIn, idempotency_key: str | None,
                               next_after: list[str] | None,
                               ) -> tuple[CurationProtocol, VoteCast, list[dict], dict | None] | None:
    """The vote on a read this process opened, judged from the opened read and recorded in one
    statement (`repo.record_vote_on_open_read`): the protocol, the event, the confirmed omissions
    and the next read's row (None: none opened). None when nothing was written: the judgement
    refused the vote, or the read is no longer open to its reader; the locking way says why."""
    try:
        protocol = _protocol(opened.protocol)
        read = {"study_id": opened.study_id, "suggested": opened.suggested, "unmapped": opened.unmapped}
        # Judged before a connection is taken: a grid's instances, should its judgement read them,
        # come through a connection of their own (`_pooled_instances`).
        event, confirmed = await _judgement(None, protocol, body, read, opened.assignment_id, opened.reader_id,
                                            instances=lambda: _pooled_instances(res, opened.study_id))
        async with res.pool.connection() as conn:
            row = await repo.record_vote_on_open_read(conn, event, idempotency_key, confirmed, next_after, _COLUMNS)
    except (Problem, UniqueViolation):
        return None
    if not row.pop("vote_recorded"):
        return None
    return protocol, event, confirmed, (row if row.get("assignment_id") is not None else None)


def _recorded(res: Resources[Any], reader_id: str, protocol: CurationProtocol, event: VoteCast,
              confirmed: list[dict], next_row: dict | None, next_after: list[str] | None) -> VoteOut:
    """The answer to a vote just committed (its event in the outbox: the relay is told)."""
    # The relay holds a vote for its quiet gap (0.05 s) in case other votes follow. A vote that
    # leaves its reader nothing to read next (asked, and none) has no company from that reader,
    # and the campaign's last vote is always one of those: it goes at once, so the decision it
    # completes is not held (session 11: ~50 ms of the 'last vote -> all decided' chain). At most
    # one early round per reader who runs dry; readers who do not ask for `next` change nothing.
    res.relay.notify(at_once=next_after is not None and next_row is None)
    metrics.child(metrics.VOTES, protocol.vote_outcome(event.judgement)).inc()
    metrics.READS.inc()
    return VoteOut(vote_id=event.vote_id, assignment_id=event.assignment_id, study_id=event.study_id,
                   confirmed_omissions=confirmed, **event.judgement.model_dump(mode="json", exclude={"protocol"}),
                   **({} if next_after is None else _next_field(res, reader_id, next_row)))


def _next_field(res: Resources[Any], reader_id: str, row: dict | None) -> dict[str, Any]:
    """The vote answer's `next_assignment`: null when none is left; left off when it cannot be
    shown (e.g. its protocol is not loaded here): the vote is recorded all the same, and
    `GET /next` answers the reason."""
    try:
        # The model itself, not a dict of it: it is serialised once, with its own serialiser, in the vote's JSON.
        return {"next_assignment": None if row is None else _opened_view(res, reader_id, row)}
    except Problem:
        return {}


_VOTE_FIELDS = frozenset({"comment", "seconds_spent", "confirm"})


def unknown_fields(body: VoteIn, protocol: CurationProtocol) -> list[str]:
    """Fields of the request that neither the vote nor the protocol's judgement defines: a page that
    sends `added` where the API reads `added_labels` must be told, not have the correction dropped."""
    given = set(body.model_fields_set) | set(body.model_extra or {})
    return sorted(given - _VOTE_FIELDS - (set(protocol.judgement.model_fields) - {"protocol"}))


async def _judgement(conn, protocol: CurationProtocol, body: VoteIn, a: dict, assignment_id: str, reader_id: str,
                     instances: Callable[[], Awaitable[set[tuple[str, int]]]] | None = None,
                     ) -> tuple[VoteCast, list[dict]]:
    """The vote event, its judgement read and checked the protocol's way (e.g. a verdict with label
    corrections, or a full grade grid with points on this study's own instances)."""
    unknown = unknown_fields(body, protocol)
    if unknown:
        raise Problem(422, "; ".join(f"body.{f}: Extra inputs are not permitted" for f in unknown),
                      errors=[{"loc": ["body", f], "msg": "Extra inputs are not permitted"} for f in unknown])
    fields = {**body.model_dump(exclude={"comment", "seconds_spent", "confirm"}), **(body.model_extra or {})}
    context = ReviewContext(study_id=a["study_id"], suggested=a["suggested"], unmapped=a["unmapped"],
                            confirm=body.confirm,
                            instances=instances or (lambda: _instances(conn, a["study_id"])),
                            comment=body.comment)
    try:
        judgement, confirmed = await protocol.read_judgement(fields, context)
    except JudgementRejected as exc:
        raise Problem(422, exc.detail, **exc.extra) from None
    except NeedsConfirmation as exc:
        raise Problem(409, exc.detail, type_=exc.type_, confirmations=exc.confirmations) from None
    vote = VoteCast(study_id=a["study_id"], protocol=protocol.name, vote_id=str(uuid.uuid4()),
                    assignment_id=assignment_id, reader_id=reader_id, judgement=judgement, comment=body.comment,
                    seconds_spent=body.seconds_spent if body.seconds_spent is not None else a["open_seconds"])
    return vote, confirmed


async def _instances(conn, study_id: str) -> set[tuple[str, int]]:
    return await repo.instances(conn, study_id)


async def _pooled_instances(res: Resources[Any], study_id: str) -> set[tuple[str, int]]:
    """The study's instances through a connection of their own (they never change once ingested)."""
    async with res.pool.connection() as conn, autocommit(conn):
        return await repo.instances(conn, study_id)


async def _lock_assignment(conn, assignment_id: str, user_id: str) -> dict:
    """The assignment (locked) with its vote if any, in one round trip; refuses other readers'."""
    a = await repo.lock_assignment(conn, assignment_id)
    # Someone else's assignment answers exactly like a missing one: a 403 would tell the caller
    # that the assignment exists, i.e. who co-reads which study.
    if a is None or a["reader_id"] != user_id:
        raise Problem(404, f"no assignment {assignment_id!r} on your worklist")
    return a


def _vote_out(row: dict, **extra: Any) -> VoteOut:
    return VoteOut(vote_id=row["vote_id"], assignment_id=row["assignment_id"], study_id=row["study_id"],
                   confirmed_omissions=row["confirmed_omissions"] or [], **judgements.fields_of(row), **extra)
