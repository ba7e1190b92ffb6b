"""Consensus's CPU per vote on its batched path, apart from the stack (issue 15 §3).

The saturated gateway bench counts consensus's CPU per vote inside a whole stack on a shared
machine, where a change of a few hundredths of a millisecond is lost in the load's noise. Here the
same code consensus runs for a batch of `vote-cast` events (the handler's `apply_many`, pipelined,
one transaction per batch, as services/common/consumer.py applies them) runs alone against a
throwaway Postgres with consensus's schema: N studies assigned to three readers, then their 3N
votes in batches of B in casting order (every third vote decides a study). Printed per vote: this
process's CPU (the service's share: building and dumping the statements, reading the rows,
deciding) and Postgres's, with the load average. The inbox and the outbox are not part of it.

Run from the checkout to measure (its `services` is the one imported):
  PYTHONPATH=$PWD .venv/bin/python bench/bench_consensus_votes.py [studies] [batch] [repeats]
For a pair against another checkout, run this file with PYTHONPATH pointing at that checkout.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import psycopg
from bench_consensus_gauges import LABELS, PROTOCOL  # this folder (run as a script)
from psycopg.rows import dict_row
from throwaway_postgres import service_postgres  # this folder (run as a script)

from radcurate.cpu_clock import process_cpu, stack_cpu
from services.common.contracts import Protocol, VoteCast
from services.common.protocols.cxr.judgement import LabelVerdict
from services.consensus.handlers import build_handlers

READERS = ("r1", "r2", "r3")


def _load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def _assign(dsn: str, n: int, round_: int) -> None:
    """N fresh studies (this round's ids) assigned to r1, r2, r3."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO assignments (study_id, patient_id, protocol, run_id, readers, suggested, difficulty,"
            " taxonomy_version, extraction, mapping, objects)"
            " SELECT %s || i, 'P' || i, %s, 'run', '[\"r1\", \"r2\", \"r3\"]',"
            " jsonb_build_array((%s::text[])[1 + i %% 5]), 'easy', 'cxr-v1',"
            " '{\"backend\": \"llm\", \"model\": \"m\", \"prompt_version\": \"v3\"}',"
            " '{\"backend\": \"lexicon\", \"model\": \"\", \"prompt_version\": \"v1\"}', '[]'"
            " FROM generate_series(1, %s) i", (f"R{round_}S", PROTOCOL, LABELS, n))
        conn.execute("ANALYZE")


def _votes(n: int, round_: int) -> list[VoteCast]:
    """3N votes in casting order: each reader's pass over the studies in turn (one in five disagrees)."""
    return [VoteCast(study_id=f"R{round_}S{i}", protocol=Protocol.CXR, vote_id=f"R{round_}S{i}-{r}",
                     assignment_id=f"a-{round_}-{i}-{r}", reader_id=r, seconds_spent=12.5,
                     judgement=LabelVerdict(verdict="disagree" if (i + k) % 5 == 0 else "agree_all",
                                            added_labels=[], removed_labels=[]))
            for k, r in enumerate(READERS) for i in range(1, n + 1)]


async def _apply(dsn: str, votes: list[VoteCast], batch: int) -> int:
    handler = build_handlers(_Res())["vote-cast"]
    assert handler.apply_many is not None
    decided = 0
    async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as conn:
        for start in range(0, len(votes), batch):
            chunk = votes[start:start + batch]
            async with conn.pipeline(), conn.transaction():
                decided += len(list(await handler.apply_many(conn, chunk, [None] * len(chunk))))
    return decided


class _Res:
    """What build_handlers reads of the service's resources on this path."""

    class settings:  # noqa: N801 - a namespace standing in for ConsensusSettings
        rules_file = None
        evaluation_bootstrap = 50

    store = None


def main(studies: int, batch: int, repeats: int) -> None:
    with service_postgres("consensus") as (dsn, pg):
        pg_pid = pg["pid"]
        for round_ in range(repeats):
            _assign(dsn, studies, round_)
            votes = _votes(studies, round_)
            before, own = stack_cpu({"postgres": {"pid": pg_pid}}), process_cpu(os.getpid())
            wall = time.perf_counter()
            decided = asyncio.run(_apply(dsn, votes, batch))
            wall = time.perf_counter() - wall
            time.sleep(0.5)  # the batch's backend has exited: let the postmaster reap its CPU into its own figure
            after, own_after = stack_cpu({"postgres": {"pid": pg_pid}}), process_cpu(os.getpid())
            service = (own_after - own) * 1000 / len(votes)
            pg = (after["postgres"] - before["postgres"]) * 1000 / len(votes)
            print(f"{len(votes)} votes in batches of {batch}, {decided} decisions: consensus {service:.3f}"
                  f" + Postgres {pg:.3f} ms CPU per vote, wall {wall:.2f} s; {_load()}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, int(sys.argv[2]) if len(sys.argv) > 2 else 100,
         int(sys.argv[3]) if len(sys.argv) > 3 else 3)
