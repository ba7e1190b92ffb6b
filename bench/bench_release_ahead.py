"""What consensus's work ahead of a release costs, at a given number of studies
(services/consensus/release_ahead.py).

Two parts, each measured as the CPU of this process (the service's share, worker threads
included) and of Postgres:

- a round while studies are still open: after every round of decisions (up to ~20 a second while
  votes stream in) the round asks whether the protocol's last study is decided. Measured over
  `rounds` rounds with ~30 % of the studies undecided, and apart, the first round (the one that
  reads every assigned study);
- keeping the report once all are decided: the accepted studies and the card's agreement
  figures read and computed from scratch (what the last decision costs), `repeats` times.

The schema is filled as bench_consensus_gauges.py fills it (decided CXR studies, three counted
votes each). The same command on main's worktree gives the other half of a pair.
Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_release_ahead.py [studies] [rounds] [repeats]
(default 13735, the paper's scale, 200 rounds, 3 repeats). Every figure is printed with the load average.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from bench_consensus_gauges import _fill, _load  # this folder (run as a script)
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from throwaway_postgres import service_postgres  # this folder (run as a script)

from radcurate.cpu_clock import stack_cpu
from services.common import protocols
from services.consensus import repo
from services.consensus.release_ahead import ReleaseAhead

PROTOCOL = "cxr-label-verification"


async def _agreement(conn: psycopg.AsyncConnection, name: str) -> dict:
    """As handlers.agreement_of computes it (without its log line)."""
    protocol = protocols.get(name)
    studies, votes = await repo.report_rows(conn, name, provenance=protocol.card_agreement_reads_provenance)
    return await asyncio.to_thread(protocol.card_agreement, studies, votes)


async def _cpu(pg_pid: int, work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """Milliseconds of this process's and of Postgres's CPU `work` took."""
    before, own = stack_cpu({"postgres": {"pid": pg_pid}}), time.process_time()
    await work()
    after, own_after = stack_cpu({"postgres": {"pid": pg_pid}}), time.process_time()
    return (own_after - own) * 1000, (after["postgres"] - before["postgres"]) * 1000


async def _run(dsn: str, pg_pid: int, rounds: int, repeats: int) -> None:
    async with AsyncConnectionPool(dsn, kwargs={"row_factory": dict_row}, min_size=1, max_size=1) as pool:
        async with pool.connection() as conn:  # ~30 % of the studies open again
            await conn.execute("DELETE FROM decisions WHERE substr(md5(study_id), 1, 1) < '5'")
            await conn.commit()
        ahead = ReleaseAhead(None, "", _agreement)

        async def one_round() -> None:
            await ahead._keep_reports(pool, {PROTOCOL})
            ahead._tries.clear()  # the service's own rechecks are scheduled, not run, here

        service, pg = await _cpu(pg_pid, one_round)
        print(f"first round, ~30% of the studies open: {service:.1f} ms service + {pg:.1f} ms Postgres CPU; {_load()}")

        async def many() -> None:
            for _ in range(rounds):
                await one_round()
        service, pg = await _cpu(pg_pid, many)
        print(f"a round after it, {rounds} rounds: {service / rounds:.2f} ms service + {pg / rounds:.2f} ms Postgres"
              f" CPU; at 20 rounds a second: {20 * (service + pg) / rounds:.0f} ms/s; {_load()}")

        async with pool.connection() as conn:  # every study decided again
            await conn.execute(
                "INSERT INTO decisions (study_id, accepted, labels, rule, rule_version, needs_adjudication, reason,"
                " vote_ids) SELECT a.study_id, true, '[]', 'majority', '1', false, '', '[]' FROM assignments a"
                " WHERE NOT EXISTS (SELECT 1 FROM decisions d WHERE d.study_id = a.study_id)")
            await conn.commit()
        kept = []
        for _ in range(repeats):
            ahead = ReleaseAhead(None, "", _agreement)  # nothing kept yet: all of it read and computed
            kept.append(await _cpu(pg_pid, lambda ahead=ahead: ahead._keep_reports(pool, {PROTOCOL})))
        print(f"the report kept once all are decided, {repeats} times: service CPU median"
              f" {statistics.median(s for s, _ in kept):.0f} ms (min {min(s for s, _ in kept):.0f}), Postgres median"
              f" {statistics.median(p for _, p in kept):.0f} ms; {_load()}")


def main(studies: int, rounds: int, repeats: int) -> None:
    with service_postgres("consensus") as (dsn, pg):
        pg_pid = pg["pid"]
        _fill(dsn, studies)
        print(f"{studies} CXR studies, 3 counted votes each; {_load()}")
        asyncio.run(_run(dsn, pg_pid, rounds, repeats))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 13735, int(sys.argv[2]) if len(sys.argv) > 2 else 200,
         int(sys.argv[3]) if len(sys.argv) > 3 else 3)
