"""The sampler's tables."""

from __future__ import annotations

import json
from collections import Counter

import psycopg

from services.common.contracts import LabelsSuggested, SamplingRequested


async def add_candidate(conn: psycopg.AsyncConnection, s: LabelsSuggested) -> None:
    """Add or refresh a study in the pool (a newer suggestion replaces the old one)."""
    await conn.execute(
        "INSERT INTO candidates (study_id, patient_id, protocol, taxonomy_version, suggestion)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (study_id) DO UPDATE SET"
        " suggestion = EXCLUDED.suggestion, taxonomy_version = EXCLUDED.taxonomy_version",
        (s.study_id, s.patient_id, s.protocol, s.taxonomy_version, s.model_dump_json()),
    )


async def unsampled_pool(conn: psycopg.AsyncConnection, protocol: str) -> list[LabelsSuggested]:
    cur = await conn.execute(
        "SELECT c.suggestion FROM candidates c LEFT JOIN sampled s USING (study_id)"
        " WHERE s.study_id IS NULL AND c.protocol = %s",
        (protocol,),
    )
    return [LabelsSuggested.model_validate(r["suggestion"]) for r in await cur.fetchall()]


async def reader_load(conn: psycopg.AsyncConnection) -> Counter[str]:
    """Studies already assigned to each reader by earlier runs (for balance across runs)."""
    cur = await conn.execute("SELECT r AS reader, count(*) AS n FROM sampled, jsonb_array_elements_text(readers) r GROUP BY r")
    return Counter({row["reader"]: row["n"] for row in await cur.fetchall()})


async def run_exists(conn: psycopg.AsyncConnection, run_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM sampling_runs WHERE run_id = %s", (run_id,))
    return await cur.fetchone() is not None


async def save_run(conn: psycopg.AsyncConnection, cmd: SamplingRequested, pool_size: int, n_selected: int,
                   unmet: list[str], tiers: dict[str, int], seconds: float) -> None:
    await conn.execute(
        "INSERT INTO sampling_runs (run_id, protocol, plan, panel, pool_size, n_selected, unmet_quotas, tiers,"
        " seconds) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (cmd.run_id, cmd.protocol, cmd.plan.model_dump_json(), json.dumps(cmd.panel), pool_size, n_selected,
         json.dumps(unmet), json.dumps(tiers), seconds),
    )


async def save_sampled(conn: psycopg.AsyncConnection, run_id: str, rows: list[tuple]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO sampled (study_id, run_id, stratum, quota, difficulty, reason, readers)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(study_id, run_id, *rest) for study_id, *rest in rows],
        )


async def pool_size(conn: psycopg.AsyncConnection, protocol: str) -> int:
    cur = await conn.execute(
        "SELECT count(*) AS n FROM candidates c LEFT JOIN sampled s USING (study_id)"
        " WHERE s.study_id IS NULL AND c.protocol = %s", (protocol,))
    return (await cur.fetchone())["n"]


async def park_run(conn: psycopg.AsyncConnection, cmd: SamplingRequested) -> None:
    await conn.execute("INSERT INTO pending_runs (run_id, command) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                       (cmd.run_id, cmd.model_dump_json()))


async def pending_runs(conn: psycopg.AsyncConnection) -> list[SamplingRequested]:
    cur = await conn.execute("SELECT command FROM pending_runs ORDER BY requested_at")
    return [SamplingRequested.model_validate(r["command"]) for r in await cur.fetchall()]


async def unpark_run(conn: psycopg.AsyncConnection, run_id: str) -> None:
    await conn.execute("DELETE FROM pending_runs WHERE run_id = %s", (run_id,))
