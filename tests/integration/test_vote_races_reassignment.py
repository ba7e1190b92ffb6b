"""A vote racing a reassignment (issue 11 §5): the sampler moves r1's read to r4, but r1's vote
reaches the gateway before the move does, so the gateway keeps the vote and never gives r4 the
study. The sampler, seeing r1's vote, undoes its move and announces it; consensus, whichever order
it sees the move and the vote in, decides the study on r1, r2 and r3 — nobody waits for r4.

Sampler and consensus run their real handlers on their own schemas in the test Postgres."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

import services
from services.common.consumer import OneByOne
from services.common.contracts import ReviewReoffered
from services.common.db import COMMON_MIGRATIONS, apply_migrations
from services.sampler import handlers as sampler
from services.sampler import leases
from tests.conftest import schema_dsn
from tests.integration.test_consensus_handlers import apply, assigned, vote

pytestmark = pytest.mark.integration
STUDY = "S-RACE"


async def _schema(infra: dict, service: str) -> psycopg.AsyncConnection:
    schema = f"t_{service}_{uuid.uuid4().hex[:8]}"
    dsn = schema_dsn(infra["postgres"]["admin_dsn"], schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    apply_migrations(dsn, sorted(Path(COMMON_MIGRATIONS).glob("*.sql")))
    apply_migrations(dsn, sorted((Path(services.__file__).parent / service / "migrations").glob("*.sql")))
    return await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row)


@pytest.fixture
async def sampler_db(infra):
    conn = await _schema(infra, "sampler")
    async with conn.transaction():
        await conn.execute("INSERT INTO candidates (study_id, patient_id, protocol, taxonomy_version, suggestion)"
                           " VALUES (%s, 'P1', 'cxr-label-verification', 'cxr-v1', '{}')", (STUDY,))
        await conn.execute(
            "INSERT INTO sampling_runs (run_id, protocol, plan, panel, pool_size, n_selected, unmet_quotas, tiers,"
            " seconds) VALUES ('run', 'cxr-label-verification', '{}', %s, 1, 1, '{}', '{}', 0)",
            (json.dumps(["r1", "r2", "r3", "r4"]),))
        await conn.execute("INSERT INTO sampled (study_id, run_id, stratum, quota, difficulty, reason, readers)"
                           " VALUES (%s, 'run', 's', 'q', 'easy', '', %s)", (STUDY, json.dumps(["r1", "r2", "r3"])))
        await conn.execute("INSERT INTO leases (study_id, reader_id, run_id, lease_until)"
                           " SELECT %s, r, 'run', now() + interval '1 hour' FROM unnest(%s::text[]) r",
                           (STUDY, ["r1", "r2", "r3"]))
    yield conn
    await conn.close()


@pytest.fixture
async def consensus_db(infra):
    conn = await _schema(infra, "consensus")
    yield conn
    await conn.close()


@pytest.fixture
def consensus():
    from types import SimpleNamespace

    from services.consensus.handlers import build_handlers

    return build_handlers(SimpleNamespace(settings=SimpleNamespace(rules_file=None, evaluation_bootstrap=50),
                                          store=None))


async def _sampler_race(conn) -> tuple[ReviewReoffered, ReviewReoffered]:
    """The sampler's side: the curator's move of r1 to r4, then r1's vote the gateway kept."""
    async with conn.transaction():
        move = await leases.move_read(conn, STUDY, "r1", "reassigned by c1", 3600, "r4")
    assert move is not None and move.readers == ["r2", "r3", "r4"]
    async with conn.transaction():
        undone = await sampler.on_vote_cast(conn, vote(STUDY, "r1", "agree_all"), None)
    assert [(e.from_reader, e.to_reader, e.readers) for e in undone] == [("r4", "r1", ["r1", "r2", "r3"])]
    cur = await conn.execute("SELECT reader_id, status FROM leases WHERE study_id = %s ORDER BY reader_id", (STUDY,))
    assert {r["reader_id"]: r["status"] for r in await cur.fetchall()} == {
        "r1": "voted", "r2": "open", "r3": "open", "r4": "cancelled"}
    cur = await conn.execute("SELECT readers FROM sampled WHERE study_id = %s", (STUDY,))
    assert (await cur.fetchone())["readers"] == ["r1", "r2", "r3"]
    return move, undone[0]


@pytest.mark.parametrize("order", ["move-before-vote", "vote-before-move"])
async def test_a_vote_that_beat_a_reassignment_counts_and_the_study_is_decided(
        sampler_db, consensus_db, consensus, order) -> None:
    move, undone = await _sampler_race(sampler_db)
    # review-reoffered and vote-cast are different topics: consensus may see them in either order;
    # the undoing always follows the move (same topic, same study key, so same partition).
    first = [move, vote(STUDY, "r1", "agree_all")]
    events = [assigned(STUDY), *(first if order == "move-before-vote" else first[::-1]),
              vote(STUDY, "r2", "agree_all"), vote(STUDY, "r3", "disagree")]
    out = []
    for event in events:
        out += await apply(consensus_db, consensus, event)
    assert out == []  # r4 is a reader now, and has not voted: not decided yet
    out = await apply(consensus_db, consensus, undone)
    assert len(out) == 1
    assert sorted(out[0].vote_ids) == [f"{STUDY}-r1", f"{STUDY}-r2", f"{STUDY}-r3"]
    cur = await consensus_db.execute("SELECT readers, former_readers FROM assignments WHERE study_id = %s", (STUDY,))
    assert await cur.fetchone() == {"readers": ["r1", "r2", "r3"], "former_readers": ["r1", "r4"]}
    assert await apply(consensus_db, consensus, undone) == []  # a redelivered undoing decides nothing twice


async def test_a_vote_closes_its_readers_lease_once_and_a_vote_without_a_lease_changes_nothing(sampler_db) -> None:
    async def statuses() -> dict[str, str]:
        cur = await sampler_db.execute("SELECT reader_id, status FROM leases WHERE study_id = %s", (STUDY,))
        return {r["reader_id"]: r["status"] for r in await cur.fetchall()}

    for event in (vote(STUDY, "r2", "agree_all"), vote(STUDY, "r2", "disagree", vote_id="again"),
                  vote(STUDY, "r9", "agree_all")):  # r2's vote, r2's second vote, a reader with no lease
        async with sampler_db.transaction():
            assert await sampler.on_vote_cast(sampler_db, event, None) == []
    assert await statuses() == {"r1": "open", "r2": "voted", "r3": "open"}


async def test_a_batch_of_votes_closes_each_readers_lease_once_and_leaves_an_undone_move_to_one_by_one(
        sampler_db) -> None:
    async def statuses() -> dict[str, str]:
        cur = await sampler_db.execute("SELECT reader_id, status FROM leases WHERE study_id = %s", (STUDY,))
        return {r["reader_id"]: r["status"] for r in await cur.fetchall()}

    batch = [vote(STUDY, "r2", "agree_all"), vote(STUDY, "r2", "disagree", vote_id="again"),
             vote(STUDY, "r9", "agree_all"), vote(STUDY, "r3", "agree_all")]
    async with sampler_db.transaction():
        assert await sampler.on_votes_cast(sampler_db, batch, [None] * len(batch)) == []
    assert await statuses() == {"r1": "open", "r2": "voted", "r3": "voted"}
    async with sampler_db.transaction():
        assert await leases.move_read(sampler_db, STUDY, "r1", "reassigned by c1", 3600, "r4") is not None
    # r1's vote beat the move: undoing it is left to the one-by-one path, which the consumer takes
    # after rolling the batch back (here: the transaction block rolls back on the exception)
    with pytest.raises(OneByOne):
        async with sampler_db.transaction():
            await sampler.on_votes_cast(sampler_db, [vote(STUDY, "r1", "agree_all")], [None])
    assert await statuses() == {"r1": "expired", "r2": "voted", "r3": "voted", "r4": "open"}
