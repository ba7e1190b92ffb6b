"""Sampling runs: requested by a curator, completed by the sampler's sampling-completed."""

from __future__ import annotations

import json

from services.common.contracts import SamplingCompleted
from services.gateway.repo.conn import Conn, Row


async def insert(conn: Conn, run_id: str, plan_json: str, panel_json: str) -> None:
    await conn.execute("INSERT INTO sampling_runs (run_id, plan, panel) VALUES (%s, %s, %s)",
                       (run_id, plan_json, panel_json))


async def complete(conn: Conn, e: SamplingCompleted) -> None:
    """Keep the run's outcome: counts, tiers, and the quotas the pool could not meet."""
    await conn.execute(
        "UPDATE sampling_runs SET status = %s, pool_size = %s, n_selected = %s, unmet_quotas = %s, tiers = %s,"
        " label_counts = %s, seconds = %s, error = %s, completed_at = %s WHERE run_id = %s",
        (e.status, e.pool_size, e.n_selected, json.dumps(e.unmet_quotas), json.dumps(e.tiers),
         json.dumps(e.label_counts), e.seconds, e.error, e.occurred_at, e.run_id))


async def all_runs(conn: Conn) -> list[Row]:
    """Every run, oldest first."""
    cur = await conn.execute("SELECT * FROM sampling_runs ORDER BY requested_at, run_id")
    return await cur.fetchall()


async def get(conn: Conn, run_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM sampling_runs WHERE run_id = %s", (run_id,))
    return await cur.fetchone()


async def studies_of(conn: Conn, run_id: str) -> list[Row]:
    """The run's studies (study_id, difficulty, reason), one row each, by study id."""
    cur = await conn.execute(
        "SELECT DISTINCT ON (study_id) study_id, difficulty, reason FROM assignments WHERE run_id = %s"
        " ORDER BY study_id, assigned_at", (run_id,))
    return await cur.fetchall()
