"""The funnel's batch-level handlers on real Postgres: the extractor, the mapper, the sampler's pool
and the gateway's read model each store a consumer batch of the ingest -> labels path in one
statement (`Handler.apply_many`). Each must have exactly the effects of its events one by one (the
same rows, the same events emitted, in record order), and leave a batch it cannot take whole (a
study twice, a parked sampling request) to the one-by-one path (`OneByOne`)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.rows import dict_row

from services.common.consumer import Handler, OneByOne
from services.common.contracts import (
    Event,
    FindingsExtracted,
    LabelsSuggested,
    ObjectsManifest,
    Protocol,
    ReportIngested,
    SamplingPlan,
    SamplingRequested,
)
from services.extractor.handlers import build_handlers as extractor_handlers
from services.gateway.handlers import on_labels_suggested, on_labels_suggested_many
from services.mapper.handlers import build_handlers as mapper_handlers
from services.sampler import repo as sampler_repo
from services.sampler.handlers import build_handlers as sampler_handlers
from tests.conftest import new_schema

pytestmark = pytest.mark.integration


def reports() -> list[ReportIngested]:
    """Demo chest reports (findings, negations, normal ones) and lumbar reports, with instance lists."""
    from radcurate.synth.cohort import build_cohort
    from radcurate.synth.cxr import COHORT_STREAM, _report_rng
    from radcurate.synth.lumbar_report import write_lumbar_report
    from radcurate.synth.lumbar_truth import build_lumbar_cohort
    from radcurate.synth.report import write_report

    texts = [(Protocol.CXR, write_report(t, _report_rng(0, t.study_id)).text)
             for t in build_cohort(np.random.default_rng([0, COHORT_STREAM]), 40)]
    rng = np.random.default_rng(7)
    texts += [(Protocol.LUMBAR, write_lumbar_report(t, rng).text) for t in build_lumbar_cohort(rng, 6)]
    return [ReportIngested(study_id=f"S{i:03d}", patient_id=f"P{i % 7}", study_instance_uid=f"1.2.3.{i}",
                           protocol=protocol, report_text=text + f"\nSigned by Dr. Reader {i}.",
                           objects_manifest=ObjectsManifest(key=f"manifests/S{i:03d}/{i:064x}.json",
                                                            sha256=f"{i:064x}", count=1 + i % 3))
            for i, (protocol, text) in enumerate(texts)]


@pytest.fixture
def schema_of(infra: dict) -> Callable[[str], str]:
    """A fresh schema (common outbox/inbox tables) with `service`'s own tables: its DSN."""
    def make(service: str) -> str:
        return new_schema(infra["postgres"]["admin_dsn"], service)
    return make


async def prepared(handler: Handler, events: list[Any]) -> list[Any]:
    return [None if handler.prepare is None else await handler.prepare(e) for e in events]


class _Undo(Exception):
    """Rolls a run back so the same batch can run again on the same state."""


async def run(dsn: str, handler: Handler, events: list[Any], tables: dict[str, str], *,
              batch: bool) -> tuple[list[dict], dict[str, list[dict]]]:
    """The events applied as the consumer applies a batch (pipelined, one transaction): through
    the batch-level handler, or one by one; the events emitted and the tables after, rolled back."""
    ready = await prepared(handler, events)
    out: dict[str, list[dict]] = {}
    async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as conn:
        try:
            async with conn.pipeline(), conn.transaction():
                emitted: list[Event] = []
                if batch:
                    assert handler.apply_many is not None
                    emitted = list(await handler.apply_many(conn, events, ready))
                else:
                    for event, prep in zip(events, ready, strict=True):
                        emitted += await handler.apply(conn, event, prep) or []
                for name, sql in tables.items():
                    out[name] = await (await conn.execute(sql)).fetchall()
                raise _Undo
        except _Undo:
            pass
    return [e.model_dump(exclude={"event_id", "occurred_at"}) for e in emitted], out


async def assert_batched_as_one_by_one(dsn: str, handler: Handler, events: list[Any],
                                       tables: dict[str, str]) -> tuple[list[dict], dict[str, list[dict]]]:
    one_by_one = await run(dsn, handler, events, tables, batch=False)
    batched = await run(dsn, handler, events, tables, batch=True)
    assert batched == one_by_one
    return batched


async def refuses_whole(dsn: str, handler: Handler, events: list[Any]) -> None:
    """The batch-level handler leaves this batch to the one-by-one path."""
    assert handler.apply_many is not None
    ready = await prepared(handler, events)
    async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as conn:
        with pytest.raises(OneByOne):
            async with conn.transaction():
                await handler.apply_many(conn, events, ready)


def extracted(emitted: list[dict]) -> list[FindingsExtracted]:
    return [FindingsExtracted.model_validate(e) for e in emitted]


def suggested(emitted: list[dict]) -> list[LabelsSuggested]:
    return [LabelsSuggested.model_validate(e) for e in emitted]


EXTRACTOR = SimpleNamespace(settings=SimpleNamespace(backend="rules"), extra={}, pool=None)
MAPPER = SimpleNamespace(settings=SimpleNamespace(backend="lexicon"), extra={}, pool=None)


async def test_a_batch_of_reports_is_extracted_exactly_as_one_by_one(schema_of):
    dsn = schema_of("extractor")
    handler = extractor_handlers(EXTRACTOR)["report-ingested"]  # type: ignore[arg-type]
    events = reports()
    emitted, tables = await assert_batched_as_one_by_one(dsn, handler, events, {
        "findings": "SELECT study_id, protocol, findings, provenance, phi_masks FROM findings ORDER BY study_id"})
    # what is stored is what is sent on, for every report, in record order
    assert [e["study_id"] for e in emitted] == [e.study_id for e in events]
    assert [(r["study_id"], r["findings"]) for r in tables["findings"]] == [
        (e["study_id"], e["findings"]) for e in emitted]
    assert sum(map(len, (r["findings"] for r in tables["findings"]))) > len(events)
    assert all(r["phi_masks"] for r in tables["findings"])  # the signature's name was masked
    await refuses_whole(dsn, handler, [*events[:3], events[1]])


async def test_a_batch_of_findings_is_mapped_exactly_as_one_by_one(schema_of):
    findings = extracted((await run(schema_of("extractor"),
                                    extractor_handlers(EXTRACTOR)["report-ingested"],  # type: ignore[arg-type]
                                    reports(), {}, batch=False))[0])
    dsn = schema_of("mapper")
    handler = mapper_handlers(MAPPER)["findings-extracted"]  # type: ignore[arg-type]
    emitted, tables = await assert_batched_as_one_by_one(dsn, handler, findings, {
        "suggestions": "SELECT study_id, taxonomy_version, protocol, labels, unmapped, extraction, mapping, reasoning"
                       " FROM suggestions ORDER BY study_id, taxonomy_version"})
    assert [e["study_id"] for e in emitted] == [f.study_id for f in findings]
    assert [(r["study_id"], r["labels"], r["unmapped"]) for r in tables["suggestions"]] == [
        (e["study_id"], e["labels"], e["unmapped_findings"]) for e in emitted]
    assert sum(len(r["labels"]) for r in tables["suggestions"]) > len(findings) / 2
    await refuses_whole(dsn, handler, [findings[0], *findings[2:5], findings[0]])


async def suggestions(schema_of: Callable[[str], str]) -> list[LabelsSuggested]:
    """The demo reports through the extractor and the mapper (one by one)."""
    findings = extracted((await run(schema_of("extractor"),
                                    extractor_handlers(EXTRACTOR)["report-ingested"],  # type: ignore[arg-type]
                                    reports(), {}, batch=False))[0])
    return suggested((await run(schema_of("mapper"),
                                mapper_handlers(MAPPER)["findings-extracted"],  # type: ignore[arg-type]
                                findings, {}, batch=False))[0])


async def test_a_batch_of_suggestions_joins_the_pool_exactly_as_one_by_one_unless_a_request_is_parked(
        schema_of):
    events = await suggestions(schema_of)
    dsn = schema_of("sampler")
    handler = sampler_handlers(SimpleNamespace(settings=SimpleNamespace(lease_seconds=3600.0)))[  # type: ignore[arg-type]
        "labels-suggested"]
    async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as conn, conn.transaction():
        await sampler_repo.add_candidate(conn, events[3])  # an older suggestion of a study, replaced
        await sampler_repo.add_candidate(conn, events[4].model_copy(update={"taxonomy_version": "old"}))
    emitted, tables = await assert_batched_as_one_by_one(dsn, handler, events, {
        "candidates": "SELECT study_id, patient_id, protocol, taxonomy_version, suggestion FROM candidates"
                      " ORDER BY study_id"})
    assert emitted == []
    assert [LabelsSuggested.model_validate(r["suggestion"]) for r in tables["candidates"]] == sorted(
        events, key=lambda e: e.study_id)
    await refuses_whole(dsn, handler, [*events[:3], events[2]])
    # a parked request's draw must see the pool as it was at each suggestion: one by one
    cmd = SamplingRequested(study_id="run-1", run_id="run-1", protocol=Protocol.CXR, panel=["a", "b"],
                            plan=SamplingPlan(n=2, readers_per_study=1, seed=1), min_pool_size=100)
    async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as conn, conn.transaction():
        await sampler_repo.park_run(conn, cmd)
    await refuses_whole(dsn, handler, events[:3])


async def test_a_batch_of_suggestions_reaches_the_gateways_read_model_exactly_as_one_by_one(schema_of):
    events = await suggestions(schema_of)
    dsn = schema_of("gateway")
    # as services.gateway.handlers.build_handlers wires them (whose other handlers need an object store)
    handler = Handler(apply=on_labels_suggested, apply_many=on_labels_suggested_many)
    emitted, tables = await assert_batched_as_one_by_one(dsn, handler, events, {
        "suggestions": "SELECT study_id, taxonomy_version, labels, unmapped, extraction, mapping FROM suggestions"
                       " ORDER BY study_id"})
    assert emitted == []
    assert [(r["study_id"], r["labels"], r["extraction"]) for r in tables["suggestions"]] == [
        (e.study_id, [x.model_dump(mode="json") for x in e.labels], e.extraction.model_dump(mode="json"))
        for e in sorted(events, key=lambda e: e.study_id)]
    await refuses_whole(dsn, handler, [*events[:3], events[0]])


async def test_a_batch_of_decisions_reaches_the_gateways_read_model_exactly_as_one_by_one(schema_of):
    """consensus-reached: a batch of votes decides many studies at once; the gateway stores them in one statement."""
    from services.common.contracts import CellConsensus, ConsensusReached
    from services.gateway.handlers import on_consensus_reached, on_consensus_reached_many

    dsn = schema_of("gateway")
    events = [ConsensusReached(study_id=f"S{i}", protocol=Protocol.CXR, accepted=i % 3 != 0, rule="majority",
                               rule_version="1", labels=["cardiomegaly"][: i % 2], vote_ids=[f"v{i}a", f"v{i}b"],
                               cells=[CellConsensus(cell_id="L4-L5", grade="Mild", method="majority")] if i == 4
                               else [])
              for i in range(6)]
    async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as conn:  # S0 decided before
        await conn.execute("INSERT INTO decisions (study_id, accepted, labels, rule, vote_ids)"
                           " VALUES ('S0', true, '[]', 'earlier', '[]')")
        await conn.commit()
    handler = Handler(apply=on_consensus_reached, apply_many=on_consensus_reached_many)
    emitted, tables = await assert_batched_as_one_by_one(dsn, handler, events, {
        "decisions": "SELECT study_id, accepted, labels, rule, vote_ids, cells FROM decisions ORDER BY study_id"})
    assert emitted == []
    assert [(r["study_id"], r["rule"], r["vote_ids"]) for r in tables["decisions"]] == [
        ("S0", "earlier", []), *((e.study_id, "majority", e.vote_ids) for e in events[1:])]
    assert tables["decisions"][4]["cells"][0]["grade"] == "Mild" and tables["decisions"][3]["cells"] is None
    await refuses_whole(dsn, handler, [*events[:3], events[0]])
