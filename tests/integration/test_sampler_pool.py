"""The sampler's labels-suggested path against real Postgres: each suggestion enters the pool and
reads the parked sampling requests in one statement; a request stays parked until the pool is as
large as it asks, and is then drawn."""

from __future__ import annotations

from pathlib import Path

import pytest

import services
from services.common.contracts import (
    LabelsSuggested,
    ModelProvenance,
    Protocol,
    SamplingCompleted,
    SamplingPlan,
    SamplingRequested,
)
from services.common.db import apply_migrations, migration_files, open_pool, unit_of_work
from services.sampler import repo
from services.sampler.handlers import on_labels_suggested, on_sampling_requested

pytestmark = pytest.mark.integration


def suggestion(i: int) -> LabelsSuggested:
    prov = ModelProvenance(backend="rules")
    return LabelsSuggested(study_id=f"S{i}", patient_id=f"P{i}", protocol=Protocol.CXR, taxonomy_version="cxr-v1",
                           labels=[], extraction=prov, mapping=prov)


def request(run_id: str, min_pool_size: int) -> SamplingRequested:
    return SamplingRequested(study_id=run_id, run_id=run_id, protocol=Protocol.CXR, panel=["a", "b"],
                             plan=SamplingPlan(n=2, readers_per_study=1, seed=1), min_pool_size=min_pool_size)


@pytest.fixture
def sampler_dsn(fresh_schema: str) -> str:
    apply_migrations(fresh_schema, migration_files(Path(services.__file__).parent / "sampler"))
    return fresh_schema


async def test_a_suggestion_joins_the_pool_and_reads_the_parked_requests_oldest_first(sampler_dsn):
    pool = await open_pool(sampler_dsn)
    try:
        async with unit_of_work(pool) as conn:
            assert await repo.add_candidate(conn, suggestion(1)) == []
            await repo.park_run(conn, request("run-old", 50))
        async with unit_of_work(pool) as conn:
            await repo.park_run(conn, request("run-new", 60))
        async with unit_of_work(pool) as conn:
            parked = await repo.add_candidate(conn, suggestion(2))
            again = await repo.add_candidate(conn, suggestion(2).model_copy(update={"taxonomy_version": "cxr-v2"}))
            assert await repo.pool_size(conn, Protocol.CXR) == 2
            cur = await conn.execute("SELECT taxonomy_version FROM candidates WHERE study_id = 'S2'")
            assert (await cur.fetchone())["taxonomy_version"] == "cxr-v2"  # a newer suggestion replaces the old
    finally:
        await pool.close()
    assert [cmd.run_id for cmd in parked] == ["run-old", "run-new"] == [cmd.run_id for cmd in again]
    assert parked[0].min_pool_size == 50


async def test_a_parked_request_is_drawn_once_the_pool_is_large_enough(sampler_dsn):
    pool = await open_pool(sampler_dsn)
    try:
        async with unit_of_work(pool) as conn:
            assert await on_sampling_requested(conn, request("run-1", 3), None) == []
        for i in (1, 2):
            async with unit_of_work(pool) as conn:
                assert await on_labels_suggested(conn, suggestion(i), None) == []
        async with unit_of_work(pool) as conn:
            emitted = await on_labels_suggested(conn, suggestion(3), None)
            assert await repo.add_candidate(conn, suggestion(4)) == []  # no longer parked
    finally:
        await pool.close()
    done = [e for e in emitted if isinstance(e, SamplingCompleted)]
    assert len(done) == 1 and done[0].run_id == "run-1" and done[0].status == "completed"
