"""Many researchers waiting for one release (`GET /api/v1/releases/{id}?wait=S`): the Postgres
connections the waits hold, how soon the last waiter hears the commit, and the CPU it all costs.

The gateway app in this process (through httpx's ASGI transport, as tests/integration/test_release_wait.py
drives it) on the gateway's own tables (this checkout's migrations) in a throwaway embedded
Postgres, nothing else running. Per round: N waiters wait for a requested release; once every
request is in (N waiting, a fixed pause), the release is recorded (`record_released`, committed);
printed per round: Postgres client backends while waiting (beyond those before), commit -> last
answer in ms, and the CPU of this process and of Postgres (postmaster, live and exited backends)
per waiter from the first request to the last answer. Run it in two checkouts back to back (this
branch, main) for a pair; the load average is printed.

Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_release_wait.py [waiters] [rounds]  (default 100 5)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid

import httpx
import psycopg
from pydantic import SecretStr
from throwaway_postgres import service_postgres  # this folder (run as a script)

from radcurate.cpu_clock import process_cpu, stack_cpu
from services.common.contracts import BenchmarkReleased
from services.common.db import open_pool
from services.common.runtime import Resources
from services.gateway.app import GatewaySettings, build_app
from services.gateway.auth import token_hash
from services.gateway.repo import releases

PROTOCOL = "cxr-label-verification"
PAUSE_S = 2.0  # every request in and waiting before the commit


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def backends(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                           " AND pid <> pg_backend_pid()").fetchone()
        return int(row[0]) if row else 0


async def one_round(client: httpx.AsyncClient, pool, dsn: str, pg: dict,
                    waiters: int) -> tuple[int, float, float, float]:
    release_id = f"R{uuid.uuid4().hex[:8]}"
    async with pool.connection() as conn:
        await releases.insert_requested(conn, release_id, PROTOCOL)
    before = backends(dsn)
    cpu0, pg0 = process_cpu(os.getpid()), stack_cpu(pg)["postgres"]
    tasks = [asyncio.create_task(client.get(f"/api/v1/releases/{release_id}", params={"wait": 30}))
             for _ in range(waiters)]
    await asyncio.sleep(PAUSE_S)
    held = backends(dsn) - before
    event = BenchmarkReleased(study_id=release_id, correlation_id="c", release_id=release_id, protocol=PROTOCOL,
                              released_count=3, holdout_count=2, manifest_key=f"releases/{release_id}/m.json",
                              manifest_sha256="ab" * 32)
    async with pool.connection() as conn:
        async with conn.transaction():
            await releases.record_released(conn, event, {"policy": "bench"})
        committed = time.perf_counter()
    answers = await asyncio.gather(*tasks)
    last = time.perf_counter() - committed
    assert all(a.status_code == 200 and a.json()["status"] == "released" for a in answers), answers[0].text
    cpu = (process_cpu(os.getpid()) - cpu0) * 1000 / waiters
    pg_cpu = (stack_cpu(pg)["postgres"] - pg0) * 1000 / waiters
    return held, last * 1000, cpu, pg_cpu


async def main(waiters: int, rounds: int) -> None:
    with service_postgres("gateway") as (dsn, state):
        token = f"rc_c1_{uuid.uuid4().hex}"
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO users (user_id, display_name, role, token_sha256, active, token_expires_at)"
                         " VALUES ('c1', 'C1', 'curator', %s, true, now() + interval '1 hour')", (token_hash(token),))
        settings = GatewaySettings(database_url=SecretStr(dsn))
        app = build_app(settings)
        pool = await open_pool(dsn)
        res = Resources(settings, pool, None, None, None)  # type: ignore[arg-type]
        app.state.resources = res
        limits = httpx.Limits(max_connections=None)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                                     headers={"Authorization": f"Bearer {token}"}, timeout=60, limits=limits) as client:
            rows = []
            for r in range(rounds + 1):
                row = await one_round(client, pool, dsn, {"postgres": state}, waiters)
                if r:  # the first round warms up (the listener's connection, imports)
                    rows.append(row)
                    print(f"round {r}: {row[0]} more backends while waiting; commit -> last answer {row[1]:.1f} ms;"
                          f" CPU per waiter {row[2]:.3f} ms this process, {row[3]:.3f} ms Postgres", flush=True)
        print(f"{waiters} waiters, median of {rounds}: backends {statistics.median(r[0] for r in rows):.0f},"
              f" commit -> last answer {statistics.median(r[1] for r in rows):.1f} ms, CPU per waiter"
              f" {statistics.median(r[2] for r in rows):.3f} ms process + {statistics.median(r[3] for r in rows):.3f}"
              f" ms Postgres; load {load()}", flush=True)
        if (listener := res.extra.get("release_listener")) is not None:
            await listener.close()
        await pool.close()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    asyncio.run(main(*(args + [100, 5][len(args):])))
