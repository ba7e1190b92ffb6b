"""Issue 15: the release's de-identification checks and agreement report are prepared when the
studies are decided (services/consensus/release_ahead.py) and reused by the release only while
what they were computed from is unchanged: an object rewritten after its check is read and checked
again (and refused if it carries identifiers), and a later vote or adjudication recomputes the
report. Real Postgres schema and S3 server."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace

import pytest

from services.common import protocols
from services.common.contracts import AdjudicationRequested, Protocol, SelectionPlan, SelectionRequested
from services.common.db import open_pool
from services.common.failures import TransientError
from services.common.objectstore import sha256_hex
from services.consensus import object_checks, repo
from services.consensus.handlers import build_handlers
from services.consensus.object_checks import PROFILE_VERSION
from services.consensus.publish import NotDeidentified, copy_release_objects
from services.consensus.release_ahead import ReleaseAhead
from services.gateway.ingest import parse_instance
from tests.integration import test_consensus_handlers
from tests.integration.test_consensus_handlers import apply, assigned, decide, rows, vote
from tests.integration.test_release_deid import BUCKETS, put, seeded_bytes

pytestmark = pytest.mark.integration

db = test_consensus_handlers.db  # the consensus schema, migrated, one connection


@pytest.fixture
def store(infra):
    from radcurate.demo import store_for

    store = store_for(infra)
    for bucket in BUCKETS.values():
        store.ensure_bucket(bucket)
    return store


@pytest.fixture
async def pool(fresh_schema):
    pool = await open_pool(fresh_schema)
    yield pool
    await pool.close()


def consensus(store, pool):
    """The handlers and their ReleaseAhead, as app.py builds them (the task itself is not started:
    each test runs its rounds)."""
    res = SimpleNamespace(settings=SimpleNamespace(rules_file=None, evaluation_bootstrap=50, check_ahead=True,
                                                   **BUCKETS), store=store, pool=pool, extra={})
    handlers = build_handlers(res)
    ahead = res.extra["release_ahead"]
    assert isinstance(ahead, ReleaseAhead)
    return handlers, ahead


def selection() -> SelectionRequested:
    release_id = f"rel-{uuid.uuid4().hex[:8]}"
    return SelectionRequested(study_id=release_id, release_id=release_id, protocol=Protocol.CXR,
                              plan=SelectionPlan(target_size=4, holdout_fraction=0.5, min_per_label=0))


def released_objects(store, release_id: str) -> list[str]:
    return [o.object_name for o in store.client.list_objects(BUCKETS["public_bucket"], prefix=f"releases/{release_id}/",
                                                             recursive=True) if o.object_name.endswith(".dcm")]


@pytest.fixture
def counted_checks(monkeypatch):
    """Every object read and checked (object_checks.check_object), in order."""
    seen: list[str] = []
    real = object_checks.check_object

    def counting(store, bucket, key):
        seen.append(key)
        return real(store, bucket, key)
    monkeypatch.setattr(object_checks, "check_object", counting)
    return seen


async def point_studies_at(db, studies: list[str], key: str, data: bytes) -> None:
    """Give each study one object: `key`, recorded with the sha256 of `data` (as ingest records it)."""
    for i, study_id in enumerate(studies):
        obj = {"object_key": key, "sha256": sha256_hex(data), "sop_instance_uid": f"1.2.{i}",
               "series_instance_uid": f"1.3.{i}", "instance_number": 1}
        await db.execute("UPDATE assignments SET objects = %s WHERE study_id = %s", (json.dumps([obj]), study_id))
    await db.commit()


async def test_objects_checked_when_decided_are_not_read_again_but_one_rewritten_after_its_check_is(
        db, store, pool, counted_checks):
    clean = parse_instance("ok.dcm", seeded_bytes(), scrub=True, patient_id="PSEUDO-1")[0].data
    key = put(store, clean)
    handlers, ahead = consensus(store, pool)
    studies = [f"AH{i}" for i in range(6)]
    for study_id in studies:
        await decide(db, handlers, study_id, ["agree_all"] * 3)
    await point_studies_at(db, studies, key, clean)

    # the round after the decisions reads and checks the object once, and records it
    assert (await ahead.run_once(pool))["checked"] == 1
    assert counted_checks == [key]
    [check] = await rows(db, "SELECT sha256, profile_version, violations FROM object_checks WHERE object_key = %s",
                         key)
    assert check == {"sha256": sha256_hex(clean), "profile_version": PROFILE_VERSION, "violations": []}
    assert (await ahead.run_once(pool))["checked"] == 0  # nothing new decided: nothing read again

    # the release reuses it: not one object read, and the copies are made
    first = selection()
    handler = handlers[first.topic.value]
    assert await handler.prepare(first) is not None
    assert counted_checks == [key]
    assert len(released_objects(store, first.release_id)) == 4

    # rewritten after its check (same key and recorded sha256): read and checked again, and refused
    store.put_bytes(BUCKETS["objects_bucket"], key, seeded_bytes(), "application/dicom")
    refused = selection()
    with pytest.raises(NotDeidentified, match=rf"{key}.*AccessionNumber"):
        await handler.prepare(refused)
    assert counted_checks == [key, key]
    assert released_objects(store, refused.release_id) == []
    assert await rows(db, "SELECT release_id FROM releases") == []


async def test_a_check_of_other_bytes_or_another_profile_version_is_not_reused(db, store, pool, counted_checks):
    clean = parse_instance("ok.dcm", seeded_bytes(), scrub=True, patient_id="PSEUDO-1")[0].data
    key = put(store, clean)
    handlers, ahead = consensus(store, pool)
    studies = [f"AV{i}" for i in range(6)]
    for study_id in studies:
        await decide(db, handlers, study_id, ["agree_all"] * 3)
    await point_studies_at(db, studies, key, clean)
    await ahead.run_once(pool)
    assert counted_checks == [key]

    async def release_reads() -> list[str]:
        before = len(counted_checks)
        cmd = selection()
        assert await handlers[cmd.topic.value].prepare(cmd) is not None
        return counted_checks[before:]

    assert await release_reads() == []
    # recorded under an older profile version: read and checked again at the release
    await db.execute("UPDATE object_checks SET profile_version = 'an-older-profile'")
    await db.commit()
    assert await release_reads() == [key]
    # a check of other bytes than the release's recorded sha256: read and checked again
    await db.execute("UPDATE object_checks SET profile_version = %s, sha256 = %s", (PROFILE_VERSION, "0" * 64))
    await db.commit()
    assert await release_reads() == [key]
    # a check that found something is never taken for a pass
    await db.execute("UPDATE object_checks SET sha256 = %s, violations = '[\"(0008,0050)\"]'", (sha256_hex(clean),))
    await db.commit()
    assert await release_reads() == [key]


async def test_a_copy_of_an_object_rewritten_after_its_check_is_refused_by_the_store(store):
    """The copy is made on the checked ETag (If-Match): the window between a check and its copy
    cannot let other bytes through; the release is retried (a transient error) and checks again."""
    clean = parse_instance("ok.dcm", seeded_bytes(), scrub=True, patient_id="PSEUDO-1")[0].data
    key = put(store, clean)
    checked = object_checks.check_object(store, BUCKETS["objects_bucket"], key)
    assert checked.violations == () and checked.sha256 == sha256_hex(clean) and checked.etag
    store.put_bytes(BUCKETS["objects_bucket"], key, seeded_bytes(), "application/dicom")
    dest = f"releases/rel-{uuid.uuid4().hex[:8]}/images/0.dcm"
    with pytest.raises(TransientError, match="changed after its de-identification check"):
        copy_release_objects(store, SimpleNamespace(**BUCKETS), [("public", key, dest)], {key: checked.etag})
    assert not store.exists(BUCKETS["public_bucket"], dest)


async def test_the_agreement_report_kept_once_all_are_decided_is_reused_until_a_later_vote_or_ruling(db, pool):
    handlers, ahead = consensus(None, pool)
    for i in range(3):
        await decide(db, handlers, f"AG{i}", ["agree_all", "agree_all", "disagree" if i else "agree_all"])
    await apply(db, handlers, assigned("AG9"))  # one study still open
    assert (await ahead.run_once(pool))["agreement_cached"] == []
    for reader in ("r1", "r2", "r3"):
        await apply(db, handlers, vote("AG9", reader, "agree_all"))
    assert (await ahead.run_once(pool))["agreement_cached"] == ["cxr-label-verification"]

    async def report(conn):
        """The report the release would use, whether it was the kept one, and the report computed
        afresh from the tables now: the kept one must always be the fresh one (the figures its card
        carries: all of the whole report but per reader and AI versus expert)."""
        report, reused = await ahead.agreement(conn, Protocol.CXR.value)
        studies, votes = await repo.report_rows(conn, Protocol.CXR.value)
        await conn.commit()
        fresh = protocols.get(Protocol.CXR.value).agreement_report(studies, votes)
        assert report == {k: v for k, v in fresh.items() if k not in ("readers", "ai_vs_expert")}
        return report, reused

    async with pool.connection() as conn:
        kept, reused = await report(conn)
        assert reused and kept["studies"]["decided"] == 4
        # a re-vote (recorded, never counted) changes what the report was computed from
        await apply(db, handlers, vote("AG1", "r1", "agree_mostly", vote_id="AG1-r1-again"))
        assert (await report(conn))[1] is False
        assert (await report(conn))[1] is True  # kept again
        # a ruling changes a study's effective decision: computed again
        await apply(db, handlers, AdjudicationRequested(study_id="AG2", adjudication_id="adj-ag2", curator_id="cur",
                                                        accepted=False, labels=[], note="not convinced"))
        assert (await report(conn))[1] is False
        # a vote on a study decided later, too
        await decide(db, handlers, "AG10", ["agree_all"] * 3)
        ruled, reused = await report(conn)
        assert not reused and ruled["studies"]["decided"] == 5


async def test_a_release_waits_for_the_report_being_computed_ahead_instead_of_computing_it_again(db, pool):
    handlers, ahead = consensus(None, pool)
    for i in range(3):
        await decide(db, handlers, f"AW{i}", ["agree_all"] * 3)
    computed: list[str] = []
    compute = ahead._agreement

    async def slowly(conn, protocol):
        computed.append(protocol)
        await asyncio.sleep(0.3)  # as under load: the release comes while the round still computes
        return await compute(conn, protocol)
    ahead._agreement = slowly

    async def release_side():
        await asyncio.sleep(0.1)
        async with pool.connection() as conn:
            return await ahead.agreement(conn, Protocol.CXR.value)

    round_done, (report, reused) = await asyncio.gather(ahead.run_once(pool), release_side())
    assert round_done["agreement_cached"] == ["cxr-label-verification"]
    assert computed == ["cxr-label-verification"] and reused and report["studies"]["decided"] == 3


async def test_the_accepted_studies_read_once_all_are_decided_serve_the_release_until_anything_changes(
        db, store, pool, monkeypatch):
    clean = parse_instance("ok.dcm", seeded_bytes(), scrub=True, patient_id="PSEUDO-1")[0].data
    key = put(store, clean)
    handlers, ahead = consensus(store, pool)
    studies = [f"AS{i}" for i in range(6)]
    for study_id in studies[:5]:
        await decide(db, handlers, study_id, ["agree_all"] * 3)
    await apply(db, handlers, assigned("AS5"))  # one study still open: nothing is read ahead
    await point_studies_at(db, studies, key, clean)
    reads: list[str] = []
    read = repo.accepted_studies

    async def counted(conn, protocol):
        reads.append(protocol)
        return await read(conn, protocol)
    monkeypatch.setattr(repo, "accepted_studies", counted)
    await ahead.run_once(pool)
    assert reads == []
    for reader in ("r1", "r2", "r3"):
        await apply(db, handlers, vote("AS5", reader, "agree_all"))
    assert (await ahead.run_once(pool))["agreement_cached"] == ["cxr-label-verification"]
    assert reads == ["cxr-label-verification"]

    # the release reads no rows: it selects from the ones read ahead
    cmd = selection()
    assert await handlers[cmd.topic.value].prepare(cmd) is not None
    assert reads == ["cxr-label-verification"] and len(released_objects(store, cmd.release_id)) == 4

    async def accepted(conn):
        """The rows a release would select from, whether they were the kept ones, and the rows read
        afresh now: the kept ones must always be the fresh ones."""
        rows_now, reused = await ahead.accepted(conn, Protocol.CXR.value)
        assert rows_now == await read(conn, Protocol.CXR.value)
        await conn.commit()
        return rows_now, reused

    async with pool.connection() as conn:
        assert (await accepted(conn))[1] is True
        await apply(db, handlers, vote("AS1", "r1", "agree_mostly", vote_id="AS1-r1-again"))  # a re-vote
        assert (await accepted(conn))[1] is False
        assert (await accepted(conn))[1] is True
        await apply(db, handlers, AdjudicationRequested(study_id="AS2", adjudication_id="adj-as2", curator_id="cur",
                                                        accepted=False, labels=[], note="not convinced"))
        ruled, reused = await accepted(conn)
        assert not reused and "AS2" not in {r["study_id"] for r in ruled}
        # an assignment updated in place (a re-offer's readers; here its objects, by hand)
        other = put(store, clean + b"\0")
        await point_studies_at(db, studies[:1], other, clean + b"\0")
        updated, reused = await accepted(conn)
        assert not reused and updated[0]["objects"][0]["object_key"] == other


class _RecordingPool:
    """The pool, with the statements sent through its connections recorded."""

    def __init__(self, pool) -> None:
        self._pool, self.sent = pool, []

    def connection(self):
        pool = self

        class _Conn:
            def __init__(self, conn) -> None:
                self._conn = conn

            async def execute(self, query, params=None, **kw):
                pool.sent.append(" ".join(str(query).split()))
                return await self._conn.execute(query, params, **kw)

            def __getattr__(self, name):
                return getattr(self._conn, name)

        class _Context:
            async def __aenter__(self):
                self._cm = pool._pool.connection()
                return _Conn(await self._cm.__aenter__())

            async def __aexit__(self, *exc):
                return await self._cm.__aexit__(*exc)

        return _Context()


async def test_rounds_while_a_remembered_study_stays_open_do_not_read_every_study_and_the_last_decision_is_seen(
        db, pool):
    """Whether a protocol's last study is decided is asked after every round of decisions; reading
    all its assigned studies each time grew with the archive (~4.4 ms of CPU a round at 13,735)."""
    handlers, ahead = consensus(None, pool)
    recording = _RecordingPool(pool)
    for i in range(3):
        await decide(db, handlers, f"W{i}", ["agree_all"] * 3)
    for study in ("W7", "W8", "W9"):  # open; W9 has a vote already, so W7 and W8 are the likelier to stay open
        await apply(db, handlers, assigned(study))
    await apply(db, handlers, vote("W9", "r1", "agree_all"))
    # the likeliest to stay open first: no vote yet, then the last the gateway offers (largest id)
    assert await repo.undecided_studies(db, Protocol.CXR.value, 2) == ["W8", "W7"]
    await db.commit()

    def scans() -> int:
        return sum("FROM assignments" in q for q in recording.sent)

    assert (await ahead.run_once(recording))["agreement_cached"] == []
    assert scans() == 1
    for reader in ("r2", "r3"):  # W9 decided: W7 and W8, remembered open, still are
        await apply(db, handlers, vote("W9", reader, "agree_all"))
    ahead._protocols.add(Protocol.CXR.value)
    assert (await ahead.run_once(recording))["agreement_cached"] == []
    assert scans() == 1  # no study read but the remembered ones

    # the remembered ones decided while a study is newly assigned: found by reading them all again
    await decide(db, handlers, "W7", ["agree_all"] * 3)
    await decide(db, handlers, "W8", ["agree_all"] * 3)
    await apply(db, handlers, assigned("W10"))
    ahead._protocols.add(Protocol.CXR.value)
    assert (await ahead.run_once(recording))["agreement_cached"] == []
    assert scans() == 2
    for reader in ("r1", "r2", "r3"):
        await apply(db, handlers, vote("W10", reader, "agree_all"))
    ahead._protocols.add(Protocol.CXR.value)
    assert (await ahead.run_once(recording))["agreement_cached"] == ["cxr-label-verification"]
    async with pool.connection() as conn:
        report, reused = await ahead.agreement(conn, Protocol.CXR.value)
    assert reused and report["studies"]["decided"] == 7
