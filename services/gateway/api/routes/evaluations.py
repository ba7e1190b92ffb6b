"""Holdout evaluations (evaluator role): submit predictions, get aggregate metrics and a receipt.

The gateway knows no holdout label, so it checks only the file's form (text, CSV, columns) and
the evaluator's quota; the consensus service, which holds the truth, checks the studies and the
values and scores. A result holds aggregate metrics with bootstrap intervals, never per-study
output. The quota matters because per-label metrics are a channel: enough crafted submissions
could recover the truth, so each evaluator may score only a few files a day.

The evaluator's path: the releases open for evaluation with their metric and submission format
(and an example file), a validator that checks a file against public facts without using quota,
the submission, and the quota left. Identical bytes submitted again are answered from the first
result (no quota spent, no new probe of the holdout); past the quota a 429 carries `Retry-After`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common import outbox, protocols
from services.common.contracts import EvaluationRequested
from services.common.db import unit_of_work
from services.common.objectstore import content_key, sha256_hex
from services.gateway.api.routes.reports import wait_for_row
from services.gateway.auth import CurrentUser, Role, User, require
from services.gateway.deps import Res
from services.gateway.ladder import PolicySettings
from services.gateway.problems import Problem
from services.gateway.repo import evaluations, releases, users
from services.gateway.submissions import example_csv, problems

router = APIRouter(prefix="/api/v1/evaluations", tags=["evaluations"])
Evaluator = Annotated[User, Depends(require(Role.EVALUATOR))]
EvaluationReader = Annotated[User, Depends(require(Role.EVALUATOR, Role.CURATOR, Role.ADMIN))]
LUMBAR_COLUMNS = ["row_id", "normal_mild", "moderate", "severe"]
_BODY_DOC = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["predictions"], "properties": {
        "predictions": {"type": "string", "format": "binary"}, "release_id": {"type": "string"}}}}}}}


class EvaluationLimits(BaseSettings):
    """The gateway's evaluation knobs (same `RADCURATE_GATEWAY_` prefix as its settings)."""

    model_config = SettingsConfigDict(env_prefix="RADCURATE_GATEWAY_", extra="ignore")

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
    try:
        expected = protocols.get(protocol).submission_columns()
    except protocols.UnknownProtocol as exc:
        raise Problem(409, f"this release's protocol is not loaded here: {exc}") from None
    missing = [c for c in expected if c not in header]
    extra = [c for c in header if c not in expected]
    if missing or extra or len(set(header)) != len(header):
        raise Problem(422, f"wrong columns: missing {missing or 'none'}, unexpected {extra or 'none'}"
                      f"{', repeated names' if len(set(header)) != len(header) else ''};"
                      f" expected header: {','.join(expected)}", expected_columns=expected)
    return text


async def _release_protocol(conn, release_id: str) -> str:
    row = await releases.protocol_and_status(conn, release_id)
    if row is None:
        raise Problem(404, f"no release {release_id!r}")
    if row["status"] != "released":
        raise Problem(409, f"release {release_id!r} is not out yet")
    return row["protocol"]


async def team_of(conn, user: User) -> str:
    """The evaluator's team (quotas, budget and ladder are the team's); an account from before
    teams is its own team."""
    return await users.team(conn, user.user_id) or user.user_id


def policy_of(release: dict) -> dict:
    """The evaluation policy the release recorded when it came out."""
    return release.get("evaluation_policy") or PolicySettings().policy(True)


async def quota(conn, team: str, release: dict) -> dict:
    """The team's quota for the release now: ordinary submissions in the last 24 hours and in all,
    what is left of each, and when the oldest of the day's stops counting."""
    policy = policy_of(release)
    per_day, lifetime = policy["per_day_per_team"], policy["lifetime_per_team"]
    use = await evaluations.quota_use(conn, team, release["release_id"])
    used_day, used_all, finals = use.day, use.total, use.finals
    frees_at = use.oldest + timedelta(days=1) if use.oldest else None
    return {"team": team, "release_id": release["release_id"], "per_day": per_day, "used": used_day,
            "remaining": max(0, min(per_day - used_day, lifetime - used_all)),
            "lifetime": lifetime, "lifetime_used": used_all, "lifetime_remaining": max(0, lifetime - used_all),
            "final_used": finals > 0,
            "next_frees_at": frees_at.isoformat() if frees_at else None,
            "retry_after_seconds": max(1, int((frees_at - use.now).total_seconds())) if frees_at else 0}


async def _check_quota(conn, team: str, release: dict, final: bool) -> dict:
    """Ordinary submissions: at most the policy's per-day count per team and release in any 24
    hours (429 with `Retry-After`) and its lifetime budget (409, for good). The final evaluation:
    once per team and release (409)."""
    left = await quota(conn, team, release)
    if final:
        if left["final_used"]:
            raise Problem(409, f"team {team!r} has had its final evaluation on {release['release_id']!r}",
                          type_="https://radcurate.dev/problems/final-evaluation-used", quota=left)
        return left
    if left["lifetime_remaining"] <= 0:
        raise Problem(409, f"team {team!r} has used the lifetime budget of {left['lifetime']} evaluations on"
                      f" {release['release_id']!r}; only the final evaluation is left",
                      type_="https://radcurate.dev/problems/evaluation-budget-spent", quota=left)
    if left["remaining"] <= 0:
        raise Problem(429, f"team {team!r} has used its {left['per_day']} evaluations of {release['release_id']!r}"
                      " for the last 24 hours", retry_after_seconds=left["retry_after_seconds"], quota=left)
    return left


def _view(row: dict) -> dict:
    """What anyone outside the gateway sees: the policy's answer (the full aggregate only for the
    final evaluation), receipt, or the refusal; never per-study output."""
    return {"evaluation_id": row["evaluation_id"], "release_id": row["release_id"], "status": row["status"],
            "submission_sha256": row["submission_sha256"], "receipt": row["receipt"] or None,
            "metric_version": row["metric_version"] or None, "final": row["final"],
            # the full aggregate only for the final evaluation; otherwise what the policy publishes
            "metrics": row["result"] if row["final"] else row["published"],
            "problem": row["error"] or None, "submitted_at": row["submitted_at"].isoformat(),
            "completed_at": row["completed_at"].isoformat() if row["completed_at"] else None}


# --- the evaluator's path: what is open, in which format, checked for free ---------------------

def _loaded(name: str) -> protocols.CurationProtocol:
    try:
        return protocols.get(name)
    except protocols.UnknownProtocol as exc:
        raise Problem(409, f"this release's protocol is not loaded here: {exc}") from None


async def _released_row(conn, release_id: str) -> dict:
    row = await releases.get(conn, release_id)
    if row is None:
        raise Problem(404, f"no release {release_id!r}")
    if row["status"] != "released":
        raise Problem(409, f"release {release_id!r} is not out yet")
    return row


async def _holdout_study_ids(res, release: dict) -> list[str]:
    """The holdout study ids, from the release's public manifest (checked against its recorded
    digest); kept per process, since a release never changes."""
    cache = res.extra.setdefault("holdout_study_ids", {})
    if release["release_id"] not in cache:
        body = await asyncio.to_thread(res.store.get_bytes, res.settings.public_bucket, release["manifest_key"])
        if sha256_hex(body) != release["manifest_sha256"]:
            raise Problem(503, f"the manifest of {release['release_id']!r} differs from the released one")
        cache[release["release_id"]] = sorted(json.loads(body)["holdout"]["study_ids"])
    return cache[release["release_id"]]


def _release_view(row: dict) -> dict:
    protocol = _loaded(row["protocol"])
    fmt = protocol.submission_format()
    base = f"/api/v1/evaluations/releases/{row['release_id']}"
    return {"release_id": row["release_id"], "protocol": row["protocol"], "released_count": row["released_count"],
            "holdout_count": row["holdout_count"], "manifest_sha256": row["manifest_sha256"],
            "metric": protocol.metric.describe(),
            # what a submission will show, so an evaluator reads the rules before spending quota
            "policy": policy_of(row),
            "submission": {**fmt.describe(), "row_count": row["holdout_count"] * fmt.keys_per_study},
            "links": {"self": base, "example": f"{base}/example.csv",
                      "validate": f"/api/v1/evaluations/validate?release_id={row['release_id']}",
                      "submit": f"/api/v1/evaluations?release_id={row['release_id']}"}}


@router.get("/releases")
async def open_releases(_: EvaluationReader, res: Res) -> list[dict]:
    """Releases open for evaluation, newest first: metric, submission format and links to an
    example file, the validator and the submission endpoint."""
    async with res.pool.connection() as conn:
        return [_release_view(r) for r in await releases.released(conn)]


@router.get("/releases/{release_id}")
async def open_release(release_id: str, _: EvaluationReader, res: Res) -> dict:
    """One release open for evaluation, with the holdout study ids to predict (never their labels)."""
    async with res.pool.connection() as conn:
        row = await _released_row(conn, release_id)
    return {**_release_view(row), "holdout_study_ids": await _holdout_study_ids(res, row)}


@router.get("/releases/{release_id}/example.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {}}, "description": "A file in the submission format."}})
async def example_file(release_id: str, _: EvaluationReader, res: Res) -> Response:
    """A well-formed submission for the release: every row present, uninformative values (it
    passes the validator and would score as chance)."""
    async with res.pool.connection() as conn:
        row = await _released_row(conn, release_id)
    text = example_csv(_loaded(row["protocol"]).submission_format(), await _holdout_study_ids(res, row))
    return Response(text, media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{release_id}-example.csv"'})


@router.post("/validate", openapi_extra=_BODY_DOC,
             responses={422: {"description": "What would be refused: columns, rows, ids, values."}})
async def validate(request: Request, user: EvaluationReader, res: Res, lim: Limits,
                   release_id: str | None = None) -> dict:
    """Check a predictions file exactly as a submission is checked, against public facts only
    (columns, holdout ids, values), without scoring it and without using quota."""
    release_id, data = await _submission(request, release_id)
    if len(data) > lim.max_submission_bytes:
        raise Problem(413, f"the predictions file is larger than {lim.max_submission_bytes} bytes")
    async with res.pool.connection() as conn:
        row = await _released_row(conn, release_id)
        text = check_format(data, row["protocol"])
        digest = sha256_hex(data)
        earlier = None
        if user.role == Role.EVALUATOR:
            earlier = await evaluations.first_with_digest(conn, await team_of(conn, user), release_id, digest)
    fmt = _loaded(row["protocol"]).submission_format()
    found = problems(text, fmt, await _holdout_study_ids(res, row))
    if found:
        raise Problem(422, "the predictions file would be refused: " + "; ".join(found), problems=found,
                      quota_used=False)
    return {"valid": True, "release_id": release_id, "rows": row["holdout_count"] * fmt.keys_per_study,
            "submission_sha256": digest, "quota_used": False,
            "already_submitted_as": earlier}


@router.get("/quota")
async def my_quota(user: Evaluator, res: Res, release_id: str | None = None) -> dict:
    """The caller's team's submissions on a release — the one named, else the one the team last
    submitted to, else the newest — used in the last 24 hours and in all, those left, and when
    the next one frees up."""
    async with res.pool.connection() as conn:
        team = await team_of(conn, user)
        if release_id is None:
            release_id = await evaluations.current_release(conn, team)
            if release_id is None:
                raise Problem(404, "no release is open for evaluation")
        return await quota(conn, team, await _released_row(conn, release_id))


@router.post("", status_code=status.HTTP_201_CREATED, openapi_extra=_BODY_DOC,
             responses={202: {"description": "Accepted; still scoring."}, 422: {"description": "Cannot be scored."},
                        409: {"description": "Lifetime budget or final evaluation used."},
                        429: {"description": "The team's daily evaluation quota used."}})
async def submit(request: Request, user: Evaluator, res: Res, response: Response, lim: Limits,
                 release_id: str | None = None, final: bool = False) -> dict:
    """Score a predictions CSV (`study_id` + one probability column per label id, exactly the
    holdout studies) against a release's holdout. The answer is what the release's policy shows
    (the ladder value); `final=true` is the team's one final evaluation, answered in full."""
    release_id, data = await _submission(request, release_id)
    if len(data) > lim.max_submission_bytes:
        raise Problem(413, f"the predictions file is larger than {lim.max_submission_bytes} bytes")
    evaluation_id = f"eval-{uuid.uuid4().hex[:12]}"
    digest = sha256_hex(data)
    async with res.pool.connection() as conn:
        check_format(data, await _release_protocol(conn, release_id))
    # The file goes to the object store before the transaction (no S3 call holds a database
    # transaction open); content-addressed, so a refused or repeated submission costs nothing.
    key = content_key(data, prefix="submissions")
    await res.store.aput_bytes(res.settings.objects_bucket, key, data, "text/csv")
    async with unit_of_work(res.pool) as conn:  # one transaction, under the team's lock
        team = await team_of(conn, user)
        release = await _released_row(conn, release_id)
        await evaluations.lock_team(conn, team, release_id)
        # The team's earlier submission of exactly these bytes is answered again rather than
        # scored again (no quota spent, and no new probe of the holdout).
        first = await evaluations.first_identical(conn, team, release_id, digest, final)
        if first is not None:
            return _answer_again(first, response, await quota(conn, team, release))
        left = await _check_quota(conn, team, release, final)
        await evaluations.insert(conn, evaluation_id, user.user_id, release_id, digest, team, final)
        await outbox.record(conn, [EvaluationRequested(
            study_id=evaluation_id, evaluation_id=evaluation_id, evaluator_id=user.user_id, release_id=release_id,
            submission_key=key, submission_sha256=digest)])
    res.relay.notify()
    row = await wait_for_row(res, lambda conn: evaluations.get(conn, evaluation_id),
                             lambda r: r["status"] != "pending", lim.evaluation_wait_seconds)
    response.headers["Location"] = f"/api/v1/evaluations/{evaluation_id}"
    async with res.pool.connection() as conn:
        left = await quota(conn, team, release)
    if row["status"] == "rejected":
        raise Problem(422, f"the predictions file cannot be scored: {row['error']}", evaluation_id=evaluation_id,
                      quota=left)
    if row["status"] == "pending":
        response.status_code = status.HTTP_202_ACCEPTED
    return {**_view(row), "quota": left}


def _answer_again(first: dict, response: Response, left: dict) -> dict:
    """An identical resubmission: the first submission's answer, marked as such."""
    response.headers["Location"] = f"/api/v1/evaluations/{first['evaluation_id']}"
    if first["status"] == "rejected":
        raise Problem(422, f"the predictions file cannot be scored: {first['error']} (identical to"
                      f" {first['evaluation_id']}; no quota used)", evaluation_id=first["evaluation_id"], quota=left)
    response.status_code = status.HTTP_202_ACCEPTED if first["status"] == "pending" else status.HTTP_200_OK
    return {**_view(first), "resubmission": True, "quota": left}



@router.get("")
async def list_evaluations(user: Evaluator, res: Res) -> list[dict]:
    """The caller's own evaluations, newest first."""
    async with res.pool.connection() as conn:
        return [_view(r) for r in await evaluations.of_evaluator(conn, user.user_id)]


@router.get("/{evaluation_id}")
async def get_evaluation(evaluation_id: str, user: CurrentUser, res: Res) -> dict:
    """One evaluation: for its evaluator, and for curators."""
    if user.role not in (Role.EVALUATOR, Role.CURATOR, Role.ADMIN):
        raise Problem(403, "evaluations are visible to their evaluator and to curators")
    async with res.pool.connection() as conn:
        row = await evaluations.get(conn, evaluation_id)
    if row is None or (user.role == Role.EVALUATOR and row["evaluator_id"] != user.user_id):
        raise Problem(404, f"no evaluation {evaluation_id!r}")
    return _view(row)
