"""Consensus's gauges on a real Postgres schema: set from the tables, and recomputed only as far as
the tables changed since the last refresh (an idle service scores nothing)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

import services
from services.common import metrics
from services.common.contracts import AdjudicationRequested
from services.common.db import apply_migrations
from services.common.protocols.cxr import CxrLabelVerification
from services.consensus import gauges
from services.consensus.handlers import build_handlers
from tests.integration.test_consensus_handlers import apply, assigned, decide

pytestmark = pytest.mark.integration


def studies(state: str) -> float | None:
    return REGISTRY.get_sample_value("radcurate_studies", {"state": state})


def kappa(label: str) -> float | None:
    return REGISTRY.get_sample_value("radcurate_fleiss_kappa", {"label": label})


@pytest.fixture
async def tables(fresh_schema):
    """A connection to a schema with the consensus tables."""
    apply_migrations(fresh_schema, sorted((Path(services.__file__).parent / "consensus" / "migrations").glob("*.sql")))
    async with await psycopg.AsyncConnection.connect(fresh_schema, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
async def pool(tables, fresh_schema):
    async with AsyncConnectionPool(fresh_schema, kwargs={"row_factory": dict_row}, min_size=1, max_size=1) as p:
        yield p


async def test_gauges_follow_the_tables_and_an_unchanged_table_is_not_scored_again(tables, pool,
                                                                                    monkeypatch) -> None:
    db = tables
    handlers = build_handlers(SimpleNamespace(settings=SimpleNamespace(rules_file=None, evaluation_bootstrap=50),
                                              store=None))
    scored = []
    real = CxrLabelVerification.label_kappas

    def counting(self, rows, votes):
        scored.append(len(rows))
        return real(self, rows, votes)

    monkeypatch.setattr(CxrLabelVerification, "label_kappas", counting)
    await decide(db, handlers, "G1", ["agree_all", "agree_all", "agree_all"])
    await decide(db, handlers, "G2", ["disagree", "disagree", "agree_all"])
    last, cpu = await gauges.refresh(pool)
    assert cpu > 0 and scored == [2] and studies("accepted") == 1 and studies("rejected") == 1
    assert studies("awaiting_votes") == 0

    # nothing changed: neither gauge is recomputed (a value set meanwhile stays)
    metrics.STUDIES.labels("accepted").set(-1)
    assert await gauges.refresh(pool, last) == (last, 0.0)
    assert scored == [2] and studies("accepted") == -1

    # a new assignment changes the states, not kappa's inputs
    await apply(db, handlers, assigned("G3"))
    last, _ = await gauges.refresh(pool, last)
    assert scored == [2] and studies("accepted") == 1 and studies("awaiting_votes") == 1

    # a decision changes both
    await decide(db, handlers, "G4", ["agree_all", "agree_all", "disagree"])
    before = kappa("cardiomegaly")
    # kappa left for later (its CPU budget): the states move, kappa stays owed until scored
    last, cpu = await gauges.refresh(pool, last, kappas=False)
    after = kappa("cardiomegaly")
    assert cpu == 0.0 and scored == [2] and studies("accepted") == 2
    assert after is not None and before is not None and (after == before or math.isnan(after) and math.isnan(before))
    last, _ = await gauges.refresh(pool, last)
    assert scored == [2, 3] and studies("accepted") == 2
    assert before is not None and kappa("cardiomegaly") is not None
    assert math.isnan(before) or kappa("cardiomegaly") != before

    # an adjudication changes the effective decision: scored again
    await apply(db, handlers, AdjudicationRequested(study_id="G2", adjudication_id="adj", curator_id="cur",
                                                    accepted=True, labels=["cardiomegaly"]))
    last, _ = await gauges.refresh(pool, last)
    assert scored == [2, 3, 3] and studies("accepted") == 3 and studies("adjudicated") == 1
