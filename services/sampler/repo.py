"""The sampler's tables."""

from __future__ import annotations

import json
from collections import Counter

import psycopg

from services.common.contracts import LabelsSuggested, SamplingRequested, parse_event


async def add_candidates(conn: psycopg.AsyncConnection, suggestions: list[LabelsSuggested]) -> list[SamplingRequested]:
    """Add or refresh studies in the pool (a newer suggestion replaces the old one; each study
    once per call); returns the parked sampling requests, oldest first (`pending_runs`), read by
    the same statement: every suggestion asks, and one statement per batch of studies instead of
    two per study is Postgres work the funnel pays 13,735 times. (A data-modifying WITH runs to
    completion whether or not its output is read.) The rows travel as binary text arrays (cheap
    for psycopg to send, see services.common.outbox), the suggestion cast to jsonb by Postgres."""
    columns: tuple[list[str], ...] = ([], [], [], [], [])
    for s in suggestions:
        for column, value in zip(columns, (s.study_id, s.patient_id, s.protocol, s.taxonomy_version,
                                           s.model_dump_json()), strict=True):
            column.append(value)
    cur = await conn.execute(
        "WITH added AS (INSERT INTO candidates (study_id, patient_id, protocol, taxonomy_version, suggestion)"
        " SELECT s, p, r, t, j::jsonb FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[])"
        " AS u(s, p, r, t, j) ON CONFLICT (study_id) DO UPDATE SET"
        " suggestion = EXCLUDED.suggestion, taxonomy_version = EXCLUDED.taxonomy_version)"
        " SELECT command FROM pending_runs ORDER BY requested_at",
        columns,
    )
    return [SamplingRequested.model_validate(r["command"]) for r in await cur.fetchall()]


async def add_candidate(conn: psycopg.AsyncConnection, s: LabelsSuggested) -> list[SamplingRequested]:
    """Add or refresh one study in the pool (`add_candidates` with one)."""
    return await add_candidates(conn, [s])


POOL_CHUNK = 1000  # candidate rows the draw's pool read holds as decoded JSON at once


async def unsampled_pool(conn: psycopg.AsyncConnection, protocol: str) -> list[LabelsSuggested]:
    """Every unsampled candidate's suggestion, as the draw needs it: without its instance list
    (`objects_manifest` left empty; `suggestions_of` reads the whole event of a selected study).

    Memory, not speed: a draw holds the whole pool. Read at once, 13,735 suggestions were all in
    memory twice (libpq's result and the decoded JSON) next to their models, and the instance
    lists that travel inline since session 7 doubled each row: the sampler's peak RSS reached
    273 MB (bench/scale_sampler_memory.py). A server-side cursor hands over POOL_CHUNK rows at a
    time, so only the models stay, and they hold no instance lists. Must run in a transaction
    (a server-side cursor lives in one); every handler does.
    """
    pool: list[LabelsSuggested] = []
    async with conn.cursor(name="unsampled_pool") as cur:
        cur.itersize = POOL_CHUNK
        await cur.execute(
            "SELECT c.suggestion - 'objects_manifest' AS suggestion FROM candidates c"
            " LEFT JOIN sampled s USING (study_id) WHERE s.study_id IS NULL AND c.protocol = %s",
            (protocol,),
        )
        async for r in cur:
            # Through the upcasters: a row stored from an older event (an inline instance list) still reads.
            s = parse_event(r["suggestion"])
            if isinstance(s, LabelsSuggested):
                pool.append(s)
    return pool


async def suggestions_of(conn: psycopg.AsyncConnection, study_ids: list[str]) -> dict[str, LabelsSuggested]:
    """The whole stored suggestion (instance list included) of each of these candidates."""
    cur = await conn.execute("SELECT suggestion FROM candidates WHERE study_id = ANY(%s)", (study_ids,))
    found = (parse_event(r["suggestion"]) for r in await cur.fetchall())
    return {s.study_id: s for s in found if isinstance(s, LabelsSuggested)}


async def reader_load(conn: psycopg.AsyncConnection) -> Counter[str]:
    """Studies already assigned to each reader by earlier runs (for balance across runs)."""
    cur = await conn.execute("SELECT r AS reader, count(*) AS n FROM sampled, jsonb_array_elements_text(readers) r"
                             " GROUP BY r")
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


async def save_run_limits(conn: psycopg.AsyncConnection, cmd: SamplingRequested, label_counts: dict) -> None:
    """Capacity and exclusions stay with the run: a reoffer weeks later must still respect them."""
    await conn.execute(
        "UPDATE sampling_runs SET capacity = %s, exclusions = %s, label_counts = %s WHERE run_id = %s",
        (json.dumps(cmd.capacity), json.dumps(cmd.exclusions), json.dumps(label_counts), cmd.run_id))


async def open_leases(conn: psycopg.AsyncConnection, run_id: str, readers: dict[str, list[str]],
                      lease_seconds: float) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO leases (study_id, reader_id, run_id, lease_until)"
            " VALUES (%s, %s, %s, now() + make_interval(secs => %s)) ON CONFLICT DO NOTHING",
            [(s, r, run_id, lease_seconds) for s, rs in readers.items() for r in rs])


async def lock_lease(conn: psycopg.AsyncConnection, study_id: str, reader_id: str) -> dict | None:
    cur = await conn.execute(
        "SELECT study_id, reader_id, run_id, status, replaced_by FROM leases"
        " WHERE study_id = %s AND reader_id = %s FOR UPDATE", (study_id, reader_id))
    return await cur.fetchone()


async def close_lease(conn: psycopg.AsyncConnection, study_id: str, reader_id: str) -> dict | None:
    """Mark the reader's lease voted and return it as it was before (run_id, status, replaced_by);
    None when there is no such lease or it was voted already. One statement where a vote used to
    lock the row, read it, and update it: the row is locked (FOR UPDATE, so the old values read are
    the latest committed) and updated in the same statement."""
    cur = await conn.execute(
        "WITH old AS (SELECT study_id, reader_id, run_id, status, replaced_by FROM leases"
        " WHERE study_id = %s AND reader_id = %s FOR UPDATE)"
        " UPDATE leases l SET status = 'voted' FROM old"
        " WHERE l.study_id = old.study_id AND l.reader_id = old.reader_id AND old.status <> 'voted'"
        " RETURNING old.run_id, old.status, old.replaced_by", (study_id, reader_id))
    return await cur.fetchone()


async def close_leases(conn: psycopg.AsyncConnection, reads: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """`close_lease` for several distinct (study_id, reader_id) reads in one statement: the leases
    closed by it, as they were before, keyed by read (a read missing from the answer has no lease
    or was voted already). Rows are locked in key order, as every multi-row lock should be, so two
    transactions locking overlapping sets wait for each other instead of deadlocking. The ids travel
    in binary (a text-format list is dumped element by element in Python: 50 ids ~205 against ~22 us)."""
    cur = await conn.execute(
        "WITH old AS (SELECT l.study_id, l.reader_id, l.run_id, l.status, l.replaced_by FROM leases l"
        " JOIN unnest(%b::text[], %b::text[]) AS r(study_id, reader_id) USING (study_id, reader_id)"
        " ORDER BY l.study_id, l.reader_id FOR UPDATE OF l)"
        " UPDATE leases l SET status = 'voted' FROM old"
        " WHERE l.study_id = old.study_id AND l.reader_id = old.reader_id AND old.status <> 'voted'"
        " RETURNING old.study_id, old.reader_id, old.run_id, old.status, old.replaced_by",
        ([s for s, _ in reads], [r for _, r in reads]))
    return {(row["study_id"], row["reader_id"]): row for row in await cur.fetchall()}


async def due_leases(conn: psycopg.AsyncConnection, limit: int = 200) -> list[dict]:
    """Open leases past their deadline, locked so two sweepers never move the same read."""
    cur = await conn.execute(
        "SELECT study_id, reader_id, run_id FROM leases WHERE status = 'open' AND lease_until < now()"
        " ORDER BY lease_until LIMIT %s FOR UPDATE SKIP LOCKED", (limit,))
    return await cur.fetchall()


async def run_limits(conn: psycopg.AsyncConnection, run_id: str) -> dict:
    cur = await conn.execute("SELECT protocol, plan, panel, capacity, exclusions FROM sampling_runs WHERE run_id = %s",
                             (run_id,))
    return await cur.fetchone()


async def study_readers(conn: psycopg.AsyncConnection, study_id: str) -> tuple[list[str], set[str]]:
    """The study's current readers, and everyone who ever had it."""
    cur = await conn.execute("SELECT readers FROM sampled WHERE study_id = %s", (study_id,))
    current = (await cur.fetchone())["readers"]
    cur = await conn.execute("SELECT reader_id FROM leases WHERE study_id = %s", (study_id,))
    return current, set(current) | {r["reader_id"] for r in await cur.fetchall()}


async def move_lease(conn: psycopg.AsyncConnection, study_id: str, from_reader: str, to_reader: str,
                     run_id: str, readers: list[str], lease_seconds: float) -> None:
    await conn.execute("UPDATE leases SET status = 'expired', replaced_by = %s WHERE study_id = %s AND reader_id = %s",
                       (to_reader, study_id, from_reader))
    await conn.execute(
        "INSERT INTO leases (study_id, reader_id, run_id, lease_until)"
        " VALUES (%s, %s, %s, now() + make_interval(secs => %s))", (study_id, to_reader, run_id, lease_seconds))
    await conn.execute("UPDATE sampled SET readers = %s WHERE study_id = %s", (json.dumps(readers), study_id))


async def extend_lease(conn: psycopg.AsyncConnection, study_id: str, reader_id: str, lease_seconds: float) -> None:
    await conn.execute("UPDATE leases SET lease_until = now() + make_interval(secs => %s)"
                       " WHERE study_id = %s AND reader_id = %s", (lease_seconds, study_id, reader_id))


async def set_lease_status(conn: psycopg.AsyncConnection, study_id: str, reader_id: str, status: str) -> None:
    await conn.execute("UPDATE leases SET status = %s WHERE study_id = %s AND reader_id = %s",
                       (status, study_id, reader_id))


async def set_readers(conn: psycopg.AsyncConnection, study_id: str, readers: list[str]) -> None:
    await conn.execute("UPDATE sampled SET readers = %s WHERE study_id = %s", (json.dumps(sorted(readers)), study_id))
