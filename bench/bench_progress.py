"""The curator's funnel (`GET /api/v1/progress`, services/gateway/repo/progress.py `funnel`) as the
archive grows, and what the writes cost (a change to the counted tables shows there): on the
gateway's own tables (this checkout's migrations) in a throwaway embedded Postgres, nothing else
running.

At each size (default 3,000 and 30,000 studies, one growing archive) it prints the funnel's
Postgres CPU and wall time per call (the backend's own CPU clock from /proc), then:
- ingest: Postgres CPU per study of the studies' inserts (batches of 500, as ingest writes them);
- votes: Postgres CPU per vote of the gateway's one-statement vote (services/gateway/repo/reviews.py
  `_RECORD_VOTE`: the assignment marked voted, the outbox row, the vote), each its own transaction.
Run it in two checkouts back to back (this branch, main) for a pair; the load average is printed.

Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_progress.py [sizes...] (e.g. 3000 30000)
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row
from throwaway_postgres import service_postgres  # this folder (run as a script)

from radcurate.cpu_clock import process_cpu
from services.gateway.repo import progress

PROTOCOL = "cxr-label-verification"
VOTES = 300  # cast at each size, one per sampled study (every 10th): the last 3,000 studies
READERS = 3
BATCH = 500


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


async def backend_cpu(conn: psycopg.AsyncConnection) -> float:
    """The connection's backend's CPU seconds so far: the scheduler's nanoseconds on CPU
    (/proc/PID/schedstat), as /proc/PID/stat's 10 ms ticks are coarser than a funnel call."""
    cur = await conn.execute("SELECT pg_backend_pid() AS pid")
    row = await cur.fetchone()
    assert row is not None
    try:
        return int(Path(f"/proc/{row['pid']}/schedstat").read_text().split()[0]) / 1e9
    except OSError:
        return process_cpu(row["pid"])


async def grow(conn: psycopg.AsyncConnection, start: int, end: int) -> float:
    """Studies start..end-1 with their suggestions; every tenth sampled (three reads), two of three
    reads voted, half the sampled decided (two of three accepted). Postgres CPU of the studies'
    inserts alone, per study."""
    ingest = 0.0
    for lo in range(start, end, BATCH):
        hi = min(lo + BATCH, end)
        before = await backend_cpu(conn)
        await conn.execute(
            "INSERT INTO studies (study_id, patient_id, protocol, study_instance_uid, report_text, correlation_id)"
            " SELECT 'S' || i, 'P' || i, %s, '1.2.' || i, 'report ' || i, 'c' FROM generate_series(%s::int, %s::int) i"
            " ON CONFLICT (study_id) DO NOTHING", (PROTOCOL, lo, hi - 1))
        await conn.commit()
        ingest += await backend_cpu(conn) - before
        await conn.execute(
            "INSERT INTO suggestions (study_id, taxonomy_version, labels, unmapped, extraction, mapping)"
            " SELECT 'S' || i, 'v1', '[]', '[]', '{}', '{}' FROM generate_series(%s::int, %s::int) i", (lo, hi - 1))
        await conn.execute(
            "INSERT INTO assignments (assignment_id, study_id, reader_id, run_id, difficulty, suggested, unmapped,"
            " reason, protocol) SELECT 'A' || i || '-' || r, 'S' || i, 'r' || r, 'run', 'easy', '[]', '[]', 's', %s"
            " FROM generate_series(%s::int, %s::int) i, generate_series(1, %s::int) r WHERE i %% 10 = 0",
            (PROTOCOL, lo, hi - 1, READERS))
        await conn.execute(
            "INSERT INTO votes (vote_id, assignment_id, study_id, reader_id, judgement, added_labels, removed_labels)"
            " SELECT 'V' || i || '-' || r, 'A' || i || '-' || r, 'S' || i, 'r' || r, '{}', '[]', '[]'"
            " FROM generate_series(%s::int, %s::int) i, generate_series(1, 2) r WHERE i %% 10 = 0", (lo, hi - 1))
        await conn.execute("UPDATE assignments SET status = 'voted' WHERE assignment_id IN"
                           " (SELECT assignment_id FROM votes WHERE study_id = ANY(%s))",
                           ([f"S{i}" for i in range(lo, hi) if i % 10 == 0],))
        await conn.execute(
            "INSERT INTO decisions (study_id, accepted, labels, rule, vote_ids)"
            " SELECT 'S' || i, i %% 3 <> 0, '[]', 'majority', '[]' FROM generate_series(%s::int, %s::int) i"
            " WHERE i %% 20 = 0",
            (lo, hi - 1))
        await conn.commit()
    await conn.execute("ANALYZE")
    await conn.commit()
    return ingest / (end - start)


async def funnel_cost(conn: psycopg.AsyncConnection, calls: int) -> tuple[float, float, dict]:
    """Postgres CPU and wall per funnel call, in ms, and the funnel (after two warm-up calls)."""
    for _ in range(2):
        funnel = await progress.funnel(conn, PROTOCOL)
        await conn.commit()
    cpu0, t0 = await backend_cpu(conn), time.perf_counter()
    for _ in range(calls):
        funnel = await progress.funnel(conn, PROTOCOL)
        await conn.commit()
    wall = time.perf_counter() - t0
    return (await backend_cpu(conn) - cpu0) * 1000 / calls, wall * 1000 / calls, funnel


async def vote_cost(conn: psycopg.AsyncConnection, base: int, votes: int) -> float:
    """Postgres CPU per vote, ms: the third read of sampled studies from `base` on, one vote each."""
    studies = [i for i in range(base, base + 10 * votes, 10)][:votes]
    sql = ("WITH done AS (UPDATE assignments SET status = 'voted' WHERE assignment_id = %(a)s),"
           " event AS (INSERT INTO outbox (event_id, topic, msg_key, payload)"
           " VALUES (%(e)s, 'vote-cast', %(s)s, '{}') ON CONFLICT (event_id) DO NOTHING)"
           " INSERT INTO votes (vote_id, assignment_id, study_id, reader_id, judgement, added_labels, removed_labels)"
           " VALUES (%(v)s, %(a)s, %(s)s, 'r3', '{}', '[]', '[]')")
    before = await backend_cpu(conn)
    for i in studies:
        await conn.execute(sql, {"a": f"A{i}-3", "e": f"E{i}", "s": f"S{i}", "v": f"V{i}-3"})
        await conn.commit()
    return (await backend_cpu(conn) - before) * 1000 / len(studies)


async def main(sizes: list[int]) -> None:
    with service_postgres("gateway") as (dsn, _):
        conn = await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row)
        have = 0
        for size in sizes:
            ingest = await grow(conn, have, size)
            have = size
            cpu, wall, funnel = await funnel_cost(conn, 20 if size > 10_000 else 100)
            voted = await vote_cost(conn, size - 10 * VOTES, VOTES)
            funnel = await progress.funnel(conn, PROTOCOL)  # the votes just cast included
            await conn.commit()
            print(f"{size:>7} studies: funnel {cpu:.3f} ms Postgres CPU, {wall:.3f} ms wall per call;"
                  f" ingest {ingest * 1000:.3f} ms Postgres CPU per study; vote {voted:.3f} ms Postgres CPU"
                  f" per vote; load {load()}", flush=True)
            print(f"{'':>16}{funnel}", flush=True)
        await conn.close()



if __name__ == "__main__":
    wanted = [int(a) for a in sys.argv[1:]] or [3000, 30000]
    if wanted[0] < 10 * VOTES or wanted != sorted(set(wanted)):
        sys.exit(f"sizes must grow and start at {10 * VOTES:,} or more (the votes go to the last {10 * VOTES:,}"
                 f" studies of each size): got {wanted}")
    asyncio.run(main(wanted))
