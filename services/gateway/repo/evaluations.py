"""Holdout evaluations: submissions per team and release, their quota, and consensus's results."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.common.contracts import EvaluationCompleted
from services.gateway.repo.conn import Conn, Row


@dataclass(frozen=True)
class QuotaUse:
    """A team's ordinary submissions on a release: in the last 24 hours (`day`, the oldest of them
    at `oldest`) and in all (`total`), its final evaluations, and the database's clock."""

    day: int
    oldest: datetime | None
    total: int
    finals: int
    now: datetime


async def quota_use(conn: Conn, team: str, release_id: str) -> QuotaUse:
    cur = await conn.execute(
        "SELECT count(*) FILTER (WHERE NOT final AND submitted_at > now() - interval '1 day') AS n,"
        " min(submitted_at) FILTER (WHERE NOT final AND submitted_at > now() - interval '1 day') AS oldest,"
        " count(*) FILTER (WHERE NOT final) AS total, count(*) FILTER (WHERE final) AS finals, now() AS now"
        " FROM evaluations WHERE team = %s AND release_id = %s", (team, release_id))
    row = await cur.fetchone()
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return QuotaUse(day=row["n"], oldest=row["oldest"], total=row["total"], finals=row["finals"], now=row["now"])


async def lock_team(conn: Conn, team: str, release_id: str) -> None:
    """Serialise a team's submissions on a release until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"evaluations:{team}:{release_id}",))


async def first_identical(conn: Conn, team: str, release_id: str, digest: str, final: bool) -> Row | None:
    """The team's first submission of exactly these bytes (sha256 `digest`) for the release."""
    cur = await conn.execute(
        "SELECT * FROM evaluations WHERE team = %s AND release_id = %s AND submission_sha256 = %s AND final = %s"
        " ORDER BY submitted_at LIMIT 1", (team, release_id, digest, final))
    return await cur.fetchone()


async def first_with_digest(conn: Conn, team: str, release_id: str, digest: str) -> str | None:
    """The id of the team's first submission of these bytes for the release, final or not."""
    cur = await conn.execute(
        "SELECT evaluation_id FROM evaluations WHERE team = %s AND release_id = %s"
        " AND submission_sha256 = %s ORDER BY submitted_at LIMIT 1", (team, release_id, digest))
    row = await cur.fetchone()
    return None if row is None else str(row["evaluation_id"])


async def current_release(conn: Conn, team: str) -> str | None:
    """The release the team last submitted to, else the newest released one; None if none is out."""
    cur = await conn.execute(
        "SELECT release_id FROM (SELECT release_id, 1 AS rank, submitted_at AS at FROM evaluations"
        " WHERE team = %s UNION ALL SELECT release_id, 2, requested_at FROM releases WHERE status = 'released')"
        " AS candidates ORDER BY rank, at DESC, release_id LIMIT 1", (team,))
    row = await cur.fetchone()
    return None if row is None else str(row["release_id"])


async def insert(conn: Conn, evaluation_id: str, evaluator_id: str, release_id: str, digest: str, team: str,
                 final: bool) -> None:
    """A pending submission."""
    await conn.execute("INSERT INTO evaluations (evaluation_id, evaluator_id, release_id, submission_sha256, team,"
                       " final) VALUES (%s,%s,%s,%s,%s,%s)",
                       (evaluation_id, evaluator_id, release_id, digest, team, final))


async def get(conn: Conn, evaluation_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM evaluations WHERE evaluation_id = %s", (evaluation_id,))
    return await cur.fetchone()


async def of_evaluator(conn: Conn, evaluator_id: str) -> list[Row]:
    """The evaluator's own submissions, newest first."""
    cur = await conn.execute("SELECT * FROM evaluations WHERE evaluator_id = %s ORDER BY submitted_at DESC",
                             (evaluator_id,))
    return await cur.fetchall()


# --- evaluation-completed -------------------------------------------------------------------------

async def lock_pending(conn: Conn, evaluation_id: str) -> Row | None:
    """The submission (team, release_id, final, status) with its release's evaluation_policy and
    protocol, locked for the rest of the transaction."""
    cur = await conn.execute(
        "SELECT v.team, v.release_id, v.final, v.status, r.evaluation_policy, r.protocol FROM evaluations v"
        " LEFT JOIN releases r USING (release_id) WHERE v.evaluation_id = %s FOR UPDATE OF v", (evaluation_id,))
    return await cur.fetchone()


async def lock_ladder(conn: Conn, team: str, release_id: str) -> None:
    """Serialise a team's results on a release (so two results climb the ladder in turn)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ladder:{team}:{release_id}",))


async def published(conn: Conn, team: str, release_id: str) -> list[dict[str, Any]]:
    """What the team's completed submissions on the release published, in completion order."""
    cur = await conn.execute(
        "SELECT published FROM evaluations WHERE team = %s AND release_id = %s AND published IS NOT NULL"
        " ORDER BY completed_at, evaluation_id", (team, release_id))
    return [r["published"] for r in await cur.fetchall()]


async def complete(conn: Conn, e: EvaluationCompleted, published_json: str | None) -> None:
    """Keep the full result (or the refusal) and what the policy publishes of it (JSON, or None)."""
    await conn.execute(
        "UPDATE evaluations SET status = %s, result = %s, published = %s, error = %s, receipt = %s,"
        " metric_version = %s, completed_at = now() WHERE evaluation_id = %s",
        (e.status, json.dumps(e.result) if e.result is not None else None, published_json, e.error, e.receipt,
         e.metric_version, e.evaluation_id))
