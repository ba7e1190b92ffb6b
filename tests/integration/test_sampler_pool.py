"""The sampler's labels-suggested path against real Postgres: each suggestion enters the pool and
reads the parked sampling requests in one statement; a request stays parked until the pool is as
large as it asks, and is then drawn. The draw reads the pool in chunks without instance lists, and
each assignment still carries its study's whole stored suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest

import services
from services.common.contracts import (
    LabelsSuggested,
    ModelProvenance,
    ObjectsManifest,
    Protocol,
    ReviewAssigned,
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


def manifest(i: int) -> ObjectsManifest:
    return ObjectsManifest(key=f"manifests/S{i}/{i:064x}.json", sha256=f"{i:064x}", count=i)


async def test_the_draw_reads_the_pool_in_chunks_and_each_assignment_carries_its_stored_instance_list(
        sampler_dsn, monkeypatch):
    monkeypatch.setattr(repo, "POOL_CHUNK", 2)  # five candidates arrive in three fetches
    pool = await open_pool(sampler_dsn)
    try:
        async with unit_of_work(pool) as conn:
            for i in range(1, 6):
                await repo.add_candidate(conn, suggestion(i).model_copy(update={"objects_manifest": manifest(i)}))
        async with unit_of_work(pool) as conn:
            drawn = await repo.unsampled_pool(conn, Protocol.CXR)
            cmd = request("run-1", 1).model_copy(
                update={"plan": SamplingPlan(n=5, readers_per_study=1, seed=1)})
            emitted = await on_sampling_requested(conn, cmd, None)
    finally:
        await pool.close()
    assert sorted(s.study_id for s in drawn) == ["S1", "S2", "S3", "S4", "S5"]
    assert all(s.objects_manifest == ObjectsManifest() for s in drawn)  # the draw's copy leaves the list out
    assigned = [e for e in emitted if isinstance(e, ReviewAssigned)]
    assert assigned
    assert {e.study_id: e.objects_manifest for e in assigned} == {e.study_id: manifest(int(e.study_id[1:]))
                                                                 for e in assigned}
    done = [e for e in emitted if isinstance(e, SamplingCompleted)]
    assert done[0].status == "completed" and done[0].pool_size == 5 and done[0].n_selected == len(assigned)
