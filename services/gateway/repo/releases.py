"""Releases: requested by a curator, recorded from benchmark-released with their holdout studies."""

from __future__ import annotations

import json
from typing import Any

from psycopg_pool import AsyncConnectionPool

from services.common.contracts import BenchmarkReleased
from services.common.listener import Listener
from services.gateway.repo.conn import Conn, Row, autocommit

# The channel record_released notifies on (its payload: the release id). Postgres delivers a
# notification only when the transaction that sent it commits, so a listener that hears it reads
# the release as recorded.
RELEASE_RECORDED = "release_recorded"


async def all_releases(conn: Conn) -> list[Row]:
    """Every release, newest first."""
    cur = await conn.execute("SELECT * FROM releases ORDER BY requested_at DESC, release_id")
    return await cur.fetchall()


async def released(conn: Conn) -> list[Row]:
    """The releases that are out (open for evaluation), newest first."""
    cur = await conn.execute("SELECT * FROM releases WHERE status = 'released' ORDER BY requested_at DESC,"
                             " release_id")
    return await cur.fetchall()


async def get(conn: Conn, release_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM releases WHERE release_id = %s", (release_id,))
    return await cur.fetchone()


async def manifest_of(conn: Conn, release_id: str) -> Row | None:
    """The release's status, manifest_key and manifest_sha256."""
    cur = await conn.execute("SELECT status, manifest_key, manifest_sha256 FROM releases WHERE release_id = %s",
                             (release_id,))
    return await cur.fetchone()


async def protocol_and_status(conn: Conn, release_id: str) -> Row | None:
    """The release's protocol and status."""
    cur = await conn.execute("SELECT protocol, status FROM releases WHERE release_id = %s", (release_id,))
    return await cur.fetchone()


async def exists(conn: Conn, release_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM releases WHERE release_id = %s", (release_id,))
    return await cur.fetchone() is not None


async def insert_requested(conn: Conn, release_id: str, protocol: str) -> None:
    await conn.execute("INSERT INTO releases (release_id, protocol, status) VALUES (%s, %s, 'requested')",
                       (release_id, protocol))


async def record_released(conn: Conn, e: BenchmarkReleased, policy: dict[str, Any]) -> None:
    """The release as written, with the evaluation policy it comes out under (the first one
    recorded stays: a redelivered event does not change a release's answers)."""
    await conn.execute(
        "INSERT INTO releases (release_id, protocol, status, released_count, holdout_count, manifest_key,"
        " manifest_sha256, evaluation_policy) VALUES (%s,%s,'released',%s,%s,%s,%s,%s) ON CONFLICT (release_id)"
        " DO UPDATE SET status = 'released', released_count = EXCLUDED.released_count,"
        " holdout_count = EXCLUDED.holdout_count, manifest_key = EXCLUDED.manifest_key,"
        " manifest_sha256 = EXCLUDED.manifest_sha256,"
        " evaluation_policy = COALESCE(releases.evaluation_policy, EXCLUDED.evaluation_policy)",
        (e.release_id, e.protocol, e.released_count, e.holdout_count, e.manifest_key, e.manifest_sha256,
         json.dumps(policy)))
    # Wakes whoever waits for it (wait_released: `GET /releases/{id}?wait=`, `radcurate release
    # --wait`) as this transaction commits, instead of at their next poll.
    await conn.execute("SELECT pg_notify(%s, %s)", (RELEASE_RECORDED, e.release_id))


def release_listener(dsn: str) -> Listener:
    """The process's one listener for record_released's notifications (services/common/listener.py):
    one Postgres connection however many wait (a connection per waiter exhausted Postgres's
    connections at ~100 researchers waiting)."""
    return Listener(dsn, RELEASE_RECORDED, application_name="radcurate-gateway-release-wait")


async def wait_released(listener: Listener, pool: AsyncConnectionPool[Conn], release_id: str,
                        seconds: float) -> Row | None:
    """The release's row as soon as it is released, else as it is after `seconds` (None: no such
    release). Woken by record_released's notification as the release commits, with no polling
    in between (a poll every 0.5 s saw it ~0.25 s late on average, and each poll was a request
    to answer); each read borrows a pool connection for one statement."""

    async def read() -> Row | None:
        async with pool.connection() as conn, autocommit(conn):
            return await get(conn, release_id)

    return await listener.wait(release_id, read, lambda row: row is None or row["status"] == "released", seconds)


async def hold_out(conn: Conn, release_id: str, study_ids: list[str]) -> None:
    """Mark studies as held out by the release (readers lose access to them)."""
    async with conn.cursor() as cur:
        await cur.executemany("INSERT INTO holdout_studies (study_id, release_id) VALUES (%s,%s)"
                              " ON CONFLICT DO NOTHING", [(s, release_id) for s in study_ids])
