"""Holdout evaluations (evaluator role): submit predictions, get aggregate metrics and a receipt.

The gateway knows no holdout label, so it checks only the file's form (text, CSV, columns) and
the evaluator's quota; the consensus service, which holds the truth, checks the studies and the
values and scores. A result holds aggregate metrics with bootstrap intervals, never per-study
output. The quota matters because per-label metrics are a channel: enough crafted submissions
could recover the truth, so each evaluator may score only a few files a day.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common import outbox
from services.common.contracts import EvaluationRequested, Protocol
from services.common.db import unit_of_work
from services.common.objectstore import content_key, sha256_hex
from services.common.taxonomy import load_taxonomy
from services.gateway.api.routes.reports import wait_for_row
from services.gateway.auth import CurrentUser, Role, User, require
from services.gateway.deps import Res
from services.gateway.problems import Problem

router = APIRouter(prefix="/api/v1/evaluations", tags=["evaluations"])
Evaluator = Annotated[User, Depends(require(Role.EVALUATOR))]
LUMBAR_COLUMNS = ["row_id", "normal_mild", "moderate", "severe"]
_BODY_DOC = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["predictions"], "properties": {
        "predictions": {"type": "string", "format": "binary"}, "release_id": {"type": "string"}}}}}}}


class EvaluationLimits(BaseSettings):
    """The gateway's evaluation knobs (same `RADCURATE_GATEWAY_` prefix as its settings)."""

    model_config = SettingsConfigDict(env_prefix="RADCURATE_GATEWAY_", extra="ignore")

    evaluations_per_day: int = 5
    evaluation_wait_seconds: float = 20.0
    max_submission_bytes: int = 900_000  # stored in the object store; the event carries its key


# What the route's body may be at most, multipart overhead included; the file itself is checked
# against `max_submission_bytes` (a setting) once read.
MAX_REQUEST_BYTES = 16 * 1024 * 1024


def limits() -> EvaluationLimits:
    return EvaluationLimits()


Limits = Annotated[EvaluationLimits, Depends(limits)]


async def _submission(request: Request, release_id: str | None) -> tuple[str, bytes]:
    """(release id, file bytes) from a multipart form or a text/csv body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("predictions") or form.get("file")
        if upload is None or isinstance(upload, str):
            raise Problem(422, "the form needs a file field named 'predictions'")
        data, release_id = await upload.read(), release_id or form.get("release_id")
    elif content_type in ("text/csv", "text/plain", "application/csv"):
        data = await request.body()
    else:
        raise Problem(415, f"send the predictions as text/csv or multipart/form-data, not {content_type or 'nothing'}")
    if not release_id:
        raise Problem(422, "say which release to score against: release_id (query or form field)")
    return str(release_id), data


def check_format(data: bytes, protocol: str) -> str:
    """The file as text, if it is UTF-8 CSV with the protocol's columns; else a problem naming why."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(422, f"the predictions file is not UTF-8 text (byte {exc.start})") from None
    rows = [r for r in csv.reader(io.StringIO(text.removeprefix("\ufeff"))) if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise Problem(422, "the predictions file is empty: expected a header and one row per holdout study")
    header = [c.strip() for c in rows[0]]
    expected = LUMBAR_COLUMNS if protocol == Protocol.LUMBAR else ["study_id", *load_taxonomy("cxr").label_ids]
    missing = [c for c in expected if c not in header]
    extra = [c for c in header if c not in expected]
    if missing or extra or len(set(header)) != len(header):
        raise Problem(422, f"wrong columns: missing {missing or 'none'}, unexpected {extra or 'none'}"
                      f"{', repeated names' if len(set(header)) != len(header) else ''};"
                      f" expected header: {','.join(expected)}", expected_columns=expected)
    return text


async def _release_protocol(conn, release_id: str) -> str:
    cur = await conn.execute("SELECT protocol, status FROM releases WHERE release_id = %s", (release_id,))
    row = await cur.fetchone()
    if row is None:
        raise Problem(404, f"no release {release_id!r}")
    if row["status"] != "released":
        raise Problem(409, f"release {release_id!r} is not out yet")
    return row["protocol"]


async def _check_quota(conn, evaluator_id: str, per_day: int) -> None:
    """At most `per_day` scored-or-refused submissions per evaluator in any 24 hours."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"evaluations:{evaluator_id}",))
    cur = await conn.execute(
        "SELECT count(*) AS n, min(submitted_at) AS oldest FROM evaluations"
        " WHERE evaluator_id = %s AND submitted_at > now() - interval '1 day'", (evaluator_id,))
    row = await cur.fetchone()
    if row["n"] >= per_day:
        cur = await conn.execute("SELECT now() AS now")
        retry = row["oldest"] + timedelta(days=1) - (await cur.fetchone())["now"]
        raise Problem(429, f"you have used your {per_day} evaluations for the last 24 hours",
                      retry_after_seconds=max(1, int(retry.total_seconds())))


def _view(row: dict) -> dict:
    """What an evaluator sees: aggregates, receipt, or the refusal; never per-study output."""
    return {"evaluation_id": row["evaluation_id"], "release_id": row["release_id"], "status": row["status"],
            "submission_sha256": row["submission_sha256"], "receipt": row["receipt"] or None,
            "metric_version": row["metric_version"] or None, "metrics": row["result"],
            "problem": row["error"] or None, "submitted_at": row["submitted_at"].isoformat(),
            "completed_at": row["completed_at"].isoformat() if row["completed_at"] else None}


@router.post("", status_code=status.HTTP_201_CREATED, openapi_extra=_BODY_DOC,
             responses={202: {"description": "Accepted; still scoring."}, 422: {"description": "Cannot be scored."},
                        429: {"description": "Daily evaluation quota used."}})
async def submit(request: Request, user: Evaluator, res: Res, response: Response, lim: Limits,
                 release_id: str | None = None) -> dict:
    """Score a predictions CSV (`study_id` + one probability column per label id, exactly the
    holdout studies) against a release's holdout."""
    release_id, data = await _submission(request, release_id)
    if len(data) > lim.max_submission_bytes:
        raise Problem(413, f"the predictions file is larger than {lim.max_submission_bytes} bytes")
    evaluation_id = f"eval-{uuid.uuid4().hex[:12]}"
    async with res.pool.connection() as conn:
        check_format(data, await _release_protocol(conn, release_id))
    # The file goes to the object store before the transaction (no S3 call holds a database
    # transaction open); content-addressed, so a refused or repeated submission costs nothing.
    key = content_key(data, prefix="submissions")
    await res.store.aput_bytes(res.settings.objects_bucket, key, data, "text/csv")
    async with unit_of_work(res.pool) as conn:
        await _check_quota(conn, user.user_id, lim.evaluations_per_day)
        digest = sha256_hex(data)
        await conn.execute("INSERT INTO evaluations (evaluation_id, evaluator_id, release_id, submission_sha256)"
                           " VALUES (%s,%s,%s,%s)", (evaluation_id, user.user_id, release_id, digest))
        await outbox.record(conn, [EvaluationRequested(
            study_id=evaluation_id, evaluation_id=evaluation_id, evaluator_id=user.user_id, release_id=release_id,
            submission_key=key, submission_sha256=digest)])
    res.relay.notify()
    row = await wait_for_row(res, "SELECT * FROM evaluations WHERE evaluation_id = %s", (evaluation_id,),
                             lambda r: r["status"] != "pending", lim.evaluation_wait_seconds)
    response.headers["Location"] = f"/api/v1/evaluations/{evaluation_id}"
    if row["status"] == "rejected":
        raise Problem(422, f"the predictions file cannot be scored: {row['error']}", evaluation_id=evaluation_id)
    if row["status"] == "pending":
        response.status_code = status.HTTP_202_ACCEPTED
    return _view(row)


@router.get("")
async def list_evaluations(user: Evaluator, res: Res) -> list[dict]:
    """The caller's own evaluations, newest first."""
    async with res.pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM evaluations WHERE evaluator_id = %s ORDER BY submitted_at DESC",
                                 (user.user_id,))
        return [_view(r) for r in await cur.fetchall()]


@router.get("/{evaluation_id}")
async def get_evaluation(evaluation_id: str, user: CurrentUser, res: Res) -> dict:
    """One evaluation: for its evaluator, and for curators."""
    if user.role not in (Role.EVALUATOR, Role.CURATOR, Role.ADMIN):
        raise Problem(403, "evaluations are visible to their evaluator and to curators")
    async with res.pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM evaluations WHERE evaluation_id = %s", (evaluation_id,))
        row = await cur.fetchone()
    if row is None or (user.role == Role.EVALUATOR and row["evaluator_id"] != user.user_id):
        raise Problem(404, f"no evaluation {evaluation_id!r}")
    return _view(row)
