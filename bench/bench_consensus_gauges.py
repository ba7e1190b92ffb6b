"""What consensus's gauge refresh costs per tick, at a given number of decided studies.

Consensus refreshes `radcurate_studies{state}` and `radcurate_fleiss_kappa{label}` every 15 s
(`gauge_refresh_seconds`). Until session 7 every tick re-read every decided study (with its LLM
provenance and instance list) and its votes, and re-scored kappa, whether or not anything had
changed; now a tick first reads the tables' row counts and recomputes only what changed, from
leaner rows. This bench fills a consensus schema in an embedded Postgres with N decided CXR
studies (3 counted votes each, mixed verdicts) and measures, each `repeats` times, the CPU of this
process (the service's share, worker threads included) and of Postgres for:

- the old tick (study states, then `report_rows` and kappa for every protocol: e288641's refresh);
- a tick after a change (`gauges.refresh(pool, None)`: everything, from `repo.report_rows(provenance=False)`);
- a tick with nothing changed (`gauges.refresh(pool, last)`: the row counts only).

Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_consensus_gauges.py [studies] [repeats]
(default 13735, the paper's scale, and 3). Every figure is printed with the load average.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from throwaway_postgres import service_postgres  # this folder (run as a script)

from radcurate.cpu_clock import process_cpu, stack_cpu
from services.common import metrics, protocols
from services.consensus import gauges, repo

PERIOD_S = 15.0  # ConsensusSettings.gauge_refresh_seconds
PROTOCOL = "cxr-label-verification"
LABELS = ["cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "edema"]


def _load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def _fill(dsn: str, n: int) -> None:
    """N assigned, decided studies with three counted votes each (a vote in five disagrees)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO assignments (study_id, patient_id, protocol, run_id, readers, suggested, difficulty,"
            " taxonomy_version, extraction, mapping, objects)"
            " SELECT 'S' || i, 'P' || i, %s, 'run', '[\"r1\", \"r2\", \"r3\"]',"
            " jsonb_build_array((%s::text[])[1 + i %% 5]), 'easy', 'cxr-v1',"
            " '{\"backend\": \"llm\", \"model\": \"m\", \"prompt_version\": \"v3\"}',"
            " '{\"backend\": \"lexicon\", \"model\": \"\", \"prompt_version\": \"v1\"}',"
            " jsonb_build_array(jsonb_build_object('object_key', md5(i::text) || md5(i::text), 'sha256',"
            " md5(i::text) || md5(i::text), 'sop_instance_uid', '1.2.826.0.1.' || i, 'series_instance_uid',"
            " '1.2.826.0.2.' || i, 'series_description', 'PA', 'instance_number', 1, 'modality', 'CR',"
            " 'pixel_spacing', jsonb_build_array(0.139, 0.139), 'pixel_sha256', md5(i::text) || md5(i::text),"
            " 'patient_key', md5(i::text)))"
            " FROM generate_series(1, %s) i", (PROTOCOL, LABELS, n))
        conn.execute(
            "INSERT INTO votes (vote_id, study_id, reader_id, judgement, seconds_spent, cast_at, counted)"
            " SELECT 'S' || i || '-' || r, 'S' || i, r, jsonb_build_object('protocol', %s::text, 'verdict',"
            " CASE WHEN (i + length(r)) %% 5 = 0 AND r = 'r3' THEN 'disagree' ELSE 'agree_all' END,"
            " 'added_labels', '[]'::jsonb, 'removed_labels', '[]'::jsonb), 20, now(), true"
            " FROM generate_series(1, %s) i, unnest(ARRAY['r1', 'r2', 'r3']) r", (PROTOCOL, n))
        conn.execute(
            "INSERT INTO decisions (study_id, accepted, labels, rule, rule_version, needs_adjudication, reason,"
            " vote_ids) SELECT 'S' || i, true, jsonb_build_array((%s::text[])[1 + i %% 5]), 'majority', '1',"
            " false, '', jsonb_build_array('S' || i || '-r1', 'S' || i || '-r2', 'S' || i || '-r3')"
            " FROM generate_series(1, %s) i", (LABELS, n))
        conn.execute("VACUUM ANALYZE")


async def _old_tick(pool: AsyncConnectionPool) -> None:
    """e288641's refresh, for every protocol: states, then the report rows and kappa."""
    for name in protocols.names():
        plugin = protocols.get(name)
        async with pool.connection() as conn:
            states = await repo.study_states(conn)
            studies, votes = await repo.report_rows(conn, name)
            await conn.rollback()
        for state, n in states.items():
            metrics.STUDIES.labels(state).set(n)
        kappas = await asyncio.to_thread(plugin.label_kappas, studies, votes)
        for label, kappa in kappas.items():
            metrics.FLEISS_KAPPA.labels(label).set(float("nan") if kappa is None else kappa)


async def _measure(label: str, tick: Callable[[], Awaitable[Any]], pg_pid: int, repeats: int) -> None:
    for _ in range(repeats):
        before, own, wall = stack_cpu({"postgres": {"pid": pg_pid}}), process_cpu(os.getpid()), time.perf_counter()
        await tick()
        after, own_after = stack_cpu({"postgres": {"pid": pg_pid}}), process_cpu(os.getpid())
        service, pg = (own_after - own) * 1000, (after["postgres"] - before["postgres"]) * 1000
        print(f"{label}: {service:.0f} ms consensus + {pg:.0f} ms Postgres CPU per tick, wall"
              f" {(time.perf_counter() - wall) * 1000:.0f} ms; at one tick per {PERIOD_S:.0f} s:"
              f" {(service + pg) / PERIOD_S:.1f} ms/s; {_load()}")


async def _run(dsn: str, pg_pid: int, repeats: int) -> None:
    async with AsyncConnectionPool(dsn, kwargs={"row_factory": dict_row}, min_size=1, max_size=1) as pool:
        await _measure("old tick (every tick, changed or not)", lambda: _old_tick(pool), pg_pid, repeats)
        await _measure("new tick after a change", lambda: gauges.refresh(pool, None), pg_pid, repeats)
        last, _ = await gauges.refresh(pool, None)
        await _measure("new tick, nothing changed", lambda: gauges.refresh(pool, last), pg_pid, repeats)


def main(studies: int, repeats: int) -> None:
    with service_postgres("consensus") as (dsn, pg):
        pg_pid = pg["pid"]
        started = time.perf_counter()
        _fill(dsn, studies)
        filled = time.perf_counter() - started
        print(f"{studies} decided studies, {3 * studies} counted votes (filled in {filled:.1f} s); {_load()}")
        asyncio.run(_run(dsn, pg_pid, repeats))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 13735, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
