"""The consensus handlers on a real Postgres schema: late votes and re-votes, adjudication's audit
trail, the agreement report and holdout evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pydicom
import pytest
from psycopg.rows import dict_row

import services
from services.common import deid
from services.common.consumer import PermanentError
from services.common.contracts import (
    AdjudicationRequested,
    EvaluationRequested,
    ModelProvenance,
    ObjectsManifest,
    Protocol,
    ReportRequested,
    ReviewAssigned,
    SuggestedLabel,
    VoteCast,
)
from services.common.db import apply_migrations
from services.common.objectstore import sha256_hex
from services.common.protocols.cxr.judgement import LabelVerdict
from services.consensus.handlers import build_handlers

pytestmark = pytest.mark.integration
READERS = ["r1", "r2", "r3"]
PROV = ModelProvenance(backend="rules", prompt_version="v1")


@pytest.fixture
async def db(fresh_schema):
    own = sorted((Path(services.__file__).parent / "consensus" / "migrations").glob("*.sql"))
    apply_migrations(fresh_schema, own)
    async with await psycopg.AsyncConnection.connect(fresh_schema, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def handlers():
    res = SimpleNamespace(settings=SimpleNamespace(rules_file=None, evaluation_bootstrap=50), store=None)
    return build_handlers(res)


async def apply(conn, handlers, event):
    async with conn.transaction():
        return list(await handlers[event.topic.value].apply(conn, event, None) or [])


def assigned(study_id: str, suggested=("cardiomegaly",)) -> ReviewAssigned:
    return ReviewAssigned(study_id=study_id, protocol=Protocol.CXR, run_id="run", patient_id=f"P-{study_id}",
                          readers=READERS, reason="",
                          difficulty="easy", suggested=[SuggestedLabel(label_id=s) for s in suggested],
                          taxonomy_version="cxr-v1", extraction=PROV, mapping=PROV)


def vote(study_id: str, reader: str, verdict: str, vote_id: str | None = None, **kw) -> VoteCast:
    judgement = LabelVerdict(verdict=verdict, added_labels=kw.pop("added_labels", []),
                             removed_labels=kw.pop("removed_labels", []))
    return VoteCast(study_id=study_id, protocol=Protocol.CXR, vote_id=vote_id or f"{study_id}-{reader}",
                    assignment_id=f"a-{reader}", reader_id=reader, judgement=judgement, seconds_spent=10, **kw)


async def decide(conn, handlers, study_id, verdicts, **kw):
    await apply(conn, handlers, assigned(study_id))
    out = []
    for reader, verdict in zip(READERS, verdicts, strict=True):
        out += await apply(conn, handlers, vote(study_id, reader, verdict, **kw))
    return out


async def rows(conn, sql, *params):
    return await (await conn.execute(sql, params)).fetchall()


async def test_a_late_vote_and_a_revote_are_recorded_and_flagged_but_never_change_the_decision(db, handlers):
    await apply(db, handlers, assigned("S1"))
    await apply(db, handlers, vote("S1", "r1", "agree_all"))
    assert await apply(db, handlers, vote("S1", "r1", "disagree", vote_id="S1-r1-again")) == []
    await apply(db, handlers, vote("S1", "r2", "agree_all"))
    [reached] = await apply(db, handlers, vote("S1", "r3", "disagree"))
    assert reached.accepted and reached.rule_version == "1" and len(reached.vote_ids) == 3
    assert await apply(db, handlers, vote("S1", "r3", "agree_all", vote_id="S1-r3-late")) == []
    counted = await rows(db, "SELECT vote_id, counted FROM votes ORDER BY vote_id")
    assert {r["vote_id"]: r["counted"] for r in counted} == {
        "S1-r1": True, "S1-r1-again": False, "S1-r2": True, "S1-r3": True, "S1-r3-late": False}
    reasons = [r["reason"] for r in await rows(db, "SELECT reason FROM flags ORDER BY id")]
    assert reasons == ["re-vote by r1", "vote after decision"]
    assert (await rows(db, "SELECT accepted FROM decisions"))[0]["accepted"] is True


async def test_votes_that_raced_ahead_of_their_assignment_count_and_it_decides_the_study(db, handlers):
    for reader in READERS:  # no assignment yet: recorded as counted, nothing decided
        assert await apply(db, handlers, vote("S0", reader, "agree_all")) == []
    assert [r["counted"] for r in await rows(db, "SELECT counted FROM votes")] == [True, True, True]
    [reached] = await apply(db, handlers, assigned("S0"))
    assert reached.accepted and sorted(reached.vote_ids) == ["S0-r1", "S0-r2", "S0-r3"]
    assert await apply(db, handlers, vote("S0", "r1", "agree_all", vote_id="S0-r1-late")) == []
    assert len(await rows(db, "SELECT 1 FROM decisions")) == 1


async def test_a_vote_by_someone_who_is_not_a_reader_is_refused_and_records_nothing(db, handlers):
    await apply(db, handlers, assigned("S9"))
    with pytest.raises(PermanentError, match="not a reader"):
        await apply(db, handlers, vote("S9", "r9", "agree_all"))
    assert await rows(db, "SELECT vote_id FROM votes") == []
    assert await rows(db, "SELECT reason FROM flags") == []


async def test_only_the_last_readers_vote_decides_and_a_duplicate_vote_id_decides_nothing_early(db, handlers):
    await apply(db, handlers, assigned("S8"))
    assert await apply(db, handlers, vote("S8", "r1", "agree_all")) == []
    # the same vote delivered again under a new event id: stored once, still two readers to go
    again = vote("S8", "r1", "agree_all").model_copy(update={"event_id": "redelivered"})
    assert await apply(db, handlers, again) == []
    assert await apply(db, handlers, vote("S8", "r2", "agree_all")) == []
    [reached] = await apply(db, handlers, vote("S8", "r3", "agree_all"))
    assert sorted(reached.vote_ids) == ["S8-r1", "S8-r2", "S8-r3"]


async def test_adjudication_is_appended_beside_the_rule_decision_and_becomes_effective(db, handlers):
    [reached] = await decide(db, handlers, "S2", ["agree_mostly", "agree_mostly", "agree_all"])
    assert not reached.accepted
    assert (await rows(db, "SELECT reason FROM flags"))[0]["reason"].startswith("adjudication:")
    cmd = AdjudicationRequested(study_id="S2", adjudication_id="adj1", curator_id="cur", accepted=True,
                                labels=["cardiomegaly"], note="checked the film")
    [done] = await apply(db, handlers, cmd)
    assert (done.accepted, done.previous_accepted, done.labels) == (True, False, ["cardiomegaly"])
    assert await apply(db, handlers, cmd.model_copy(update={"event_id": "again"})) == []
    decision = (await rows(db, "SELECT accepted FROM decisions WHERE study_id = 'S2'"))[0]
    effective = (await rows(db, "SELECT accepted, adjudicated FROM effective_decisions WHERE study_id = 'S2'"))[0]
    assert decision["accepted"] is False and effective == {"accepted": True, "adjudicated": True}
    trail = await rows(db, "SELECT curator_id, note, previous_accepted FROM adjudications")
    assert trail == [{"curator_id": "cur", "note": "checked the film", "previous_accepted": False}]
    assert (await rows(db, "SELECT resolved_by FROM flags"))[0]["resolved_by"] == "cur"


async def test_the_report_is_aggregate_and_counts_every_decided_study(db, handlers):
    for i in range(6):
        await decide(db, handlers, f"R{i}", ["agree_all", "agree_all", "disagree" if i % 2 else "agree_all"])
    [ready] = await apply(db, handlers, ReportRequested(study_id="rep1", report_id="rep1", protocol=Protocol.CXR))
    assert ready.event_type == "ReportReady" and ready.report["studies"]["decided"] == 6
    assert ready.report["readers"]["r3"]["reads"] == 6
    assert not any(f"R{i}" in json.dumps(ready.report) for i in range(6))


async def test_an_evaluation_is_scored_against_the_holdout_or_refused_without_the_truth(db, handlers):
    await db.execute("INSERT INTO releases (release_id, protocol, plan, released, holdout, manifest_key,"
                     " manifest_sha256) VALUES ('r1','cxr-label-verification','{}','[]','[\"H1\",\"H2\"]','k','ab')")
    await db.execute("INSERT INTO holdout_truth VALUES ('r1','H1','[\"cardiomegaly\"]'), ('r1','H2','[]')")
    from services.common.taxonomy import load_taxonomy

    labels = load_taxonomy("cxr").label_ids
    good = "study_id," + ",".join(labels) + "\nH1," + ",".join(["0.9"] * 12) + "\nH2," + ",".join(["0.1"] * 12) + "\n"
    bad = good.replace("H2,", "H3,")
    for eid, text in (("e-good", good), ("e-bad", bad)):
        await apply(db, handlers, EvaluationRequested(study_id=eid, evaluation_id=eid, evaluator_id="ev",
                                                      release_id="r1", predictions_csv=text,
                                                      submission_sha256=sha256_hex(text.encode())))
    result = {r["evaluation_id"]: r for r in await rows(db, "SELECT * FROM evaluations")}
    assert result["e-good"]["status"] == "scored"
    assert result["e-good"]["result"]["per_label"]["cardiomegaly"]["auroc"] == 1.0
    assert result["e-bad"]["status"] == "rejected" and "missing holdout studies: 1 ('H2')" in result["e-bad"]["error"]


async def test_an_evaluation_reads_its_file_from_the_object_store_so_the_event_stays_small(db, infra):
    """Issue 11 item 1: the submission travels by key and sha256, not inside the event."""
    from minio import Minio

    from services.common.objectstore import ObjectStore, content_key
    from services.common.taxonomy import load_taxonomy

    s3 = infra["s3"]
    store = ObjectStore(Minio(s3["endpoint"], access_key=s3["access_key"], secret_key=s3["secret_key"],
                              secure=False, region="us-east-1"))
    store.ensure_bucket("radcurate-objects")
    res = SimpleNamespace(settings=SimpleNamespace(rules_file=None, evaluation_bootstrap=50,
                                                   objects_bucket="radcurate-objects"), store=store)
    handlers = build_handlers(res)
    await db.execute("INSERT INTO releases (release_id, protocol, plan, released, holdout, manifest_key,"
                     " manifest_sha256) VALUES ('r2','cxr-label-verification','{}','[]','[\"H1\",\"H2\"]','k','ab')")
    await db.execute("INSERT INTO holdout_truth VALUES ('r2','H1','[\"cardiomegaly\"]'), ('r2','H2','[]')")
    labels = load_taxonomy("cxr").label_ids
    rows_ = [f"H{i % 2 + 1}," + ",".join(["0.9" if i % 2 == 0 else "0.1"] * 12) for i in range(2)]
    data = ("study_id," + ",".join(labels) + "\n" + "\n".join(rows_) + "\n").encode()
    key = content_key(data, prefix="submissions")
    store.put_bytes("radcurate-objects", key, data)
    cmd = EvaluationRequested(study_id="e-key", evaluation_id="e-key", evaluator_id="ev", release_id="r2",
                              submission_key=key, submission_sha256=sha256_hex(data))
    assert len(cmd.model_dump_json()) < 1000  # whatever the file's size
    handler = handlers[cmd.topic.value]
    prepared = await handler.prepare(cmd)
    async with db.transaction():
        [done] = await handler.apply(db, cmd, prepared)
    assert done.status == "scored", done.error
    assert done.result["per_label"]["cardiomegaly"]["auroc"] == 1.0


async def test_a_release_is_written_to_the_object_store_before_its_transaction_opens(db, infra, fresh_schema):
    """Issue 11 item 2: no object-store call while a database transaction is open. The release
    files are written in `prepare`; `apply` only records what was written."""
    import uuid

    from minio import Minio

    from services.common.contracts import SelectionPlan, SelectionRequested
    from services.common.db import open_pool
    from services.common.objectstore import ObjectStore

    s3 = infra["s3"]
    store = ObjectStore(Minio(s3["endpoint"], access_key=s3["access_key"], secret_key=s3["secret_key"],
                              secure=False, region="us-east-1"))
    buckets = {"objects_bucket": "radcurate-objects", "public_bucket": "radcurate-public",
               "holdout_bucket": "radcurate-holdout"}
    for bucket in buckets.values():
        store.ensure_bucket(bucket)
    pool = await open_pool(fresh_schema)
    try:
        res = SimpleNamespace(settings=SimpleNamespace(rules_file=None, evaluation_bootstrap=50, **buckets),
                              store=store, pool=pool)
        handlers = build_handlers(res)
        for i in range(6):
            await decide(db, handlers, f"REL{i}", ["agree_all"] * 3)
        release_id = f"rel-{uuid.uuid4().hex[:8]}"
        cmd = SelectionRequested(study_id=release_id, release_id=release_id, protocol=Protocol.CXR,
                                 plan=SelectionPlan(target_size=4, holdout_fraction=0.5, min_per_label=0))
        handler = handlers[cmd.topic.value]
        assert handler.prepare is not None
        chosen = await handler.prepare(cmd)
        manifest_key = chosen[0].files.manifest_key
        assert store.exists("radcurate-public", manifest_key)  # written before any transaction
        assert await rows(db, "SELECT release_id FROM releases WHERE release_id = %s", release_id) == []
        async with db.transaction():
            [released] = await handler.apply(db, cmd, chosen)
        await db.commit()  # the SELECT above opened a transaction; the block was its savepoint
        assert released.manifest_key == manifest_key
        assert released.released_count + released.holdout_count == 4
        assert await handler.prepare(cmd) is None  # a redelivery writes nothing again
    finally:
        await pool.close()


async def test_the_chosen_objects_are_checked_beside_the_agreement_report_and_a_refusal_writes_nothing(
        db, infra, fresh_schema):
    """The de-identification check of the chosen DICOM objects runs while the agreement report is
    computed: an object that carries identifiers still refuses the whole release (nothing in the
    public bucket, no release row), and clean objects are copied into it."""
    import io
    import uuid

    from radcurate.demo import store_for
    from services.common.contracts import SelectionPlan, SelectionRequested
    from services.common.db import open_pool
    from services.consensus.publish import NotDeidentified
    from services.gateway.ingest import parse_instance
    from tests.integration.test_release_deid import BUCKETS, put, seeded_bytes

    store = store_for(infra)
    for bucket in BUCKETS.values():
        store.ensure_bucket(bucket)
    raw = put(store, seeded_bytes())  # as stored before the profile: AccessionNumber and more
    clean = put(store, parse_instance("ok.dcm", seeded_bytes(), scrub=True, patient_id="PSEUDO-1")[0].data)
    pool = await open_pool(fresh_schema)
    try:
        handlers = build_handlers(SimpleNamespace(
            settings=SimpleNamespace(rules_file=None, evaluation_bootstrap=50, **BUCKETS), store=store, pool=pool))
        for i in range(6):
            await decide(db, handlers, f"DEID{i}", ["agree_all"] * 3)

        async def point_every_study_at(key: str) -> None:
            for i in range(6):
                obj = {"object_key": key, "sha256": sha256_hex(f"{key}{i}".encode()), "sop_instance_uid": f"1.2.{i}",
                       "series_instance_uid": f"1.3.{i}", "instance_number": 1}
                await db.execute("UPDATE assignments SET objects = %s WHERE study_id = %s",
                                 (json.dumps([obj]), f"DEID{i}"))
            await db.commit()

        def cmd() -> SelectionRequested:
            release_id = f"rel-{uuid.uuid4().hex[:8]}"
            return SelectionRequested(study_id=release_id, release_id=release_id, protocol=Protocol.CXR,
                                      plan=SelectionPlan(target_size=4, holdout_fraction=0.5, min_per_label=0))

        def public(release_id: str) -> list[str]:
            return [o.object_name for o in store.client.list_objects(BUCKETS["public_bucket"],
                                                                     prefix=f"releases/{release_id}/", recursive=True)]

        await point_every_study_at(raw)
        refused = cmd()
        with pytest.raises(NotDeidentified, match=rf"DICOM objects are not de-identified.*{raw}.*AccessionNumber"):
            await handlers[refused.topic.value].prepare(refused)
        assert public(refused.release_id) == []
        assert await rows(db, "SELECT release_id FROM releases") == []

        await point_every_study_at(clean)
        good = cmd()
        chosen = await handlers[good.topic.value].prepare(good)
        written = public(good.release_id)
        assert len([k for k in written if k.endswith(".dcm")]) == 2 and chosen[0].files.manifest_key in written
        copied = next(k for k in written if k.endswith(".dcm"))
        assert deid.violations(pydicom.dcmread(io.BytesIO(store.get_bytes(BUCKETS["public_bucket"], copied)))) == []
    finally:
        await pool.close()


def lumbar_votes(study_id: str, disputed: str, grades: tuple[str, ...]) -> list[VoteCast]:
    from services.common.contracts import CellGrade
    from services.common.protocols.lumbar.grid import CELL_IDS
    from services.common.protocols.lumbar.judgement import GradeGrid
    return [VoteCast(study_id=study_id, protocol=Protocol.LUMBAR, vote_id=f"{study_id}-{r}", assignment_id=f"a-{r}",
                     reader_id=r, seconds_spent=10, judgement=GradeGrid(grades=[
                         CellGrade(cell_id=c, grade=g if c == disputed else "Normal/Mild") for c in CELL_IDS]))
            for r, g in zip(READERS, grades, strict=True)]


async def test_a_lumbar_adjudication_grades_the_disputed_cell_beside_the_rules_decision(db, handlers):
    from services.common.contracts import DicomObject
    disputed = "spinal_canal_stenosis_l4_l5"
    obj = DicomObject(object_key="k", sha256="s", sop_instance_uid="1.9", series_instance_uid="1.2", instance_number=4)
    manifest = ObjectsManifest(count=1, inline=[obj])
    await apply(db, handlers, assigned("L1").model_copy(update={
        "protocol": Protocol.LUMBAR, "objects_manifest": manifest, "taxonomy_version": "lumbar-v1"}))
    reached = []
    for v in lumbar_votes("L1", disputed, ("Normal/Mild", "Moderate", "Severe")):
        reached += await apply(db, handlers, v)
    assert [r.accepted for r in reached] == [False]
    point = {"series_instance_uid": "1.2", "instance_number": 4, "x": 3.0, "y": 4.0}
    cmd = AdjudicationRequested(study_id="L1", adjudication_id="adjL", curator_id="cur", accepted=True,
                                cells=[{"cell_id": disputed, "grade": "Severe", "point": point}])
    [done] = await apply(db, handlers, cmd)
    assert done.labels == [f"{disputed}:Severe"] and len(done.cells) == 25
    effective = (await rows(db, "SELECT accepted, cells, adjudicator FROM effective_decisions"))[0]
    cell = next(c for c in effective["cells"] if c["cell_id"] == disputed)
    assert effective["accepted"] and effective["adjudicator"] == "cur"
    assert cell == {"cell_id": disputed, "grade": "Severe", "method": "adjudicated", "adjudicate": False,
                    "point": point}
    rule_cell = next(c for c in (await rows(db, "SELECT cells FROM decisions"))[0]["cells"] if c["cell_id"] == disputed)
    assert rule_cell["grade"] == "Moderate" and rule_cell["adjudicate"]
    [row] = await repo_accepted(db)
    assert row["adjudicated"] and [v["reader_id"] for v in row["votes"]] == READERS


async def repo_accepted(conn):
    from services.consensus import repo
    return await repo.accepted_studies(conn, Protocol.LUMBAR.value)


class _Undo(Exception):
    """Rolls a scenario back so the same events can run again on the same state."""


async def _run_votes(conn, handlers, votes, *, batch: bool) -> tuple[list, dict]:
    """The votes applied as the consumer applies a batch (pipelined, one transaction): through the
    batch-level handler, or one by one; the events emitted and the tables after, then rolled back."""
    handler = handlers["vote-cast"]
    out: dict = {}
    try:
        async with conn.pipeline(), conn.transaction():
            if batch:
                emitted = list(await handler.apply_many(conn, votes, [None] * len(votes)))
            else:
                emitted = [e for v in votes for e in await handler.apply(conn, v, None) or ()]
            out["votes"] = await rows(conn, "SELECT vote_id, study_id, reader_id, counted, judgement, seconds_spent,"
                                      " cast_at FROM votes ORDER BY vote_id")
            out["decisions"] = await rows(conn, "SELECT study_id, accepted, labels, rule, rule_version,"
                                          " needs_adjudication, reason, vote_ids, cells FROM decisions ORDER BY 1")
            out["flags"] = await rows(conn, "SELECT study_id, reason FROM flags ORDER BY study_id, id")
            raise _Undo
    except _Undo:
        pass
    return [e.model_dump(exclude={"event_id", "occurred_at", "correlation_id"}) for e in emitted], out


async def test_a_batch_of_votes_has_exactly_the_effects_of_its_votes_one_by_one(db, handlers):
    for study in ("S1", "S2", "S4", "S5"):
        await apply(db, handlers, assigned(study))
    await apply(db, handlers, vote("S4", "r1", "agree_all"))  # S4: one vote before the batch
    async with db.transaction():  # S5: r3 moved away to r4, so r3's vote is a former reader's
        await db.execute("UPDATE assignments SET readers = '[\"r1\", \"r2\", \"r4\"]', former_readers = '[\"r3\"]'"
                         " WHERE study_id = 'S5'")
    votes = [
        vote("S1", "r1", "agree_all"), vote("S2", "r1", "disagree"), vote("S3", "r1", "agree_all"),
        vote("S1", "r1", "disagree", vote_id="S1-r1-again"),  # a re-vote in the same batch
        vote("S4", "r2", "agree_all"), vote("S1", "r2", "agree_all"), vote("S5", "r3", "agree_all"),
        vote("S2", "r1", "disagree").model_copy(update={"event_id": "again"}),  # same vote_id, new event
        vote("S3", "r2", "agree_all"), vote("S1", "r3", "disagree"),  # completes S1
        vote("S2", "r2", "agree_mostly"), vote("S4", "r3", "disagree"),  # completes S4
        vote("S1", "r3", "agree_all", vote_id="S1-r3-late"),  # after S1's decision, in the same batch
        vote("S5", "r1", "agree_all"), vote("S5", "r2", "agree_all"), vote("S5", "r4", "agree_all"),
        vote("S2", "r3", "agree_all"),  # completes S2
    ]
    one_by_one = await _run_votes(db, handlers, votes, batch=False)
    batched = await _run_votes(db, handlers, votes, batch=True)
    assert batched == one_by_one
    emitted, tables = batched
    assert sorted(e["study_id"] for e in emitted) == ["S1", "S2", "S4", "S5"]
    # S5 is decided by its current readers; the moved-away reader's vote is stored beside them
    assert [e["vote_ids"] for e in emitted if e["study_id"] == "S5"] == [["S5-r1", "S5-r2", "S5-r4"]]
    assert [f["reason"] for f in tables["flags"] if f["study_id"] == "S1"] == [
        "re-vote by r1", "vote after decision"]
    # the redelivered vote_id is stored once, beside S4's vote from before the batch
    assert len(tables["votes"]) == len({v.vote_id for v in votes}) + 1 == len(votes)


async def test_a_batch_stores_every_vote_exactly_as_one_by_one_whatever_its_text_and_seconds(db, handlers):
    """The batch's arrays travel in binary: judgements whose text a text-format array would have to
    escape (quotes, backslashes, braces, commas, NULL, non-ASCII), and seconds left out for every vote
    of a statement or only some, are stored exactly as the one-by-one statement stores them."""
    awkward = ['say "no"', "back\\slash", "{a,b}", "NULL", "", "épanchement 胸水", "tab\tnew\nline"]
    for study in ("T1", "T2", "T3"):
        await apply(db, handlers, assigned(study))
    votes = [vote(s, r, "agree_mostly", vote_id=f"{s}-{r}", added_labels=awkward[i % 7:] or ["x"],
                  removed_labels=awkward[: i % 7]).model_copy(update={"seconds_spent": seconds})
             for i, (s, r, seconds) in enumerate([("T1", "r1", None), ("T2", "r1", None), ("T3", "r1", None),
                                                   ("T1", "r2", 2.5), ("T2", "r2", None), ("T3", "r2", 7),
                                                   ("T1", "r3", None), ("T2", "r3", 0.0), ("T3", "r3", 3)])]
    one_by_one = await _run_votes(db, handlers, votes, batch=False)
    batched = await _run_votes(db, handlers, votes, batch=True)
    assert batched == one_by_one
    stored = {v["vote_id"]: v for v in batched[1]["votes"]}
    for v in votes:
        assert stored[v.vote_id]["judgement"] == json.loads(v.judgement.model_dump_json())
        assert stored[v.vote_id]["seconds_spent"] == v.seconds_spent


async def test_a_batch_holding_a_vote_by_someone_who_is_not_a_reader_is_refused(db, handlers):
    await apply(db, handlers, assigned("S9"))
    with pytest.raises(PermanentError, match="not a reader"):
        async with db.transaction():
            await handlers["vote-cast"].apply_many(db, [vote("S9", "r1", "agree_all"), vote("S9", "r9", "agree_all")],
                                                   [None, None])
    assert await rows(db, "SELECT vote_id FROM votes") == []


async def _run_assignments(conn, handlers, events, *, batch: bool) -> tuple[list, dict]:
    """Review-assigned events applied as the consumer applies a batch, through the batch-level
    handler or one by one; what they emitted and the decisions after, then rolled back."""
    handler = handlers["review-assigned"]
    out: dict = {}
    try:
        async with conn.pipeline(), conn.transaction():
            if batch:
                emitted = list(await handler.apply_many(conn, events, [None] * len(events)))
            else:
                emitted = [e for a in events for e in await handler.apply(conn, a, None) or ()]
            out["assignments"] = await rows(conn, "SELECT study_id, readers, suggested FROM assignments ORDER BY 1")
            out["decisions"] = await rows(conn, "SELECT study_id, accepted, labels, vote_ids FROM decisions ORDER BY 1")
            raise _Undo
    except _Undo:
        pass
    return [e.model_dump(exclude={"event_id", "occurred_at", "correlation_id"}) for e in emitted], out


async def test_a_batch_of_assignments_has_exactly_the_effects_of_its_assignments_one_by_one(db, handlers):
    for reader in READERS:  # S1's votes raced ahead of its assignment; S2 has two of three
        await apply(db, handlers, vote("S1", reader, "agree_all"))
    for reader in READERS[:2]:
        await apply(db, handlers, vote("S2", reader, "disagree"))
    events = [assigned("S2"), assigned("S1"), assigned("S3"), assigned("S1")]  # S1 delivered twice
    one_by_one = await _run_assignments(db, handlers, events, batch=False)
    batched = await _run_assignments(db, handlers, events, batch=True)
    assert batched == one_by_one
    emitted, tables = batched
    assert [e["study_id"] for e in emitted] == ["S1"]  # S1 decided once, S2 still waits for r3
    assert [d["study_id"] for d in tables["decisions"]] == ["S1"]
    assert [a["study_id"] for a in tables["assignments"]] == ["S1", "S2", "S3"]


class _Statements:
    """The connection, with the statements a handler sends through it counted by their first words."""

    def __init__(self, conn) -> None:
        self._conn = conn
        self.sent: list[str] = []

    async def execute(self, query, params=None, **kw):
        self.sent.append(" ".join(str(query).split()[:3]))
        return await self._conn.execute(query, params, **kw)

    def __getattr__(self, name):
        return getattr(self._conn, name)


async def test_a_batch_of_votes_deciding_many_studies_writes_their_decisions_in_one_statement(db, handlers):
    studies = [f"S{i}" for i in range(5)]
    for study in studies:
        await apply(db, handlers, assigned(study))
    counted = _Statements(db)
    async with db.pipeline(), db.transaction():
        emitted = list(await handlers["vote-cast"].apply_many(
            counted, [vote(s, r, "agree_all") for r in READERS for s in studies], [None] * 15))
    assert sorted(e.study_id for e in emitted) == studies
    assert counted.sent.count("INSERT INTO decisions") == 1
    assert [r["study_id"] for r in await rows(db, "SELECT study_id FROM decisions ORDER BY 1")] == studies


async def _legacy_and_judged_votes(db, handlers) -> None:
    """Study L1: r1's and r2's votes stored before judgements (flat columns, no judgement), r3's
    cast now, which decides it (accepted); then r3's flat columns overwritten by hand, so a read
    that took them for the judgement would show it."""
    await apply(db, handlers, assigned("L1", suggested=("cardiomegaly", "edema")))
    async with db.transaction():
        await db.execute(
            "INSERT INTO votes (vote_id, study_id, reader_id, verdict, added_labels, removed_labels, seconds_spent,"
            " cast_at, counted) VALUES ('L1-r1', 'L1', 'r1', 'agree_all', '[]', '[]', 10, now() - interval '2 min',"
            " true), ('L1-r2', 'L1', 'r2', 'agree_mostly', '[\"pleural_effusion\"]', '[\"edema\"]', 10,"
            " now() - interval '1 min', true)")
    [reached] = await apply(db, handlers, vote("L1", "r3", "agree_all"))
    assert reached.accepted
    async with db.transaction():
        await db.execute("UPDATE votes SET verdict = 'disagree', added_labels = '[\"edema\"]',"
                         " removed_labels = '[\"cardiomegaly\"]' WHERE vote_id = 'L1-r3'")


LEGACY_AND_JUDGED = [
    {"reader_id": "r1", "verdict": "agree_all", "added_labels": [], "removed_labels": []},
    {"reader_id": "r2", "verdict": "agree_mostly", "added_labels": ["pleural_effusion"], "removed_labels": ["edema"]},
    {"reader_id": "r3", "verdict": "agree_all", "added_labels": [], "removed_labels": []},
]


async def test_votes_from_before_judgements_read_from_their_flat_columns_and_the_others_from_their_judgement(
        db, handlers):
    from services.consensus import repo
    await _legacy_and_judged_votes(db, handlers)

    def fields(votes):
        return [{k: v[k] for k in ("reader_id", "verdict", "added_labels", "removed_labels")} for v in votes]

    assert fields(await repo.counted_votes(db, "L1")) == LEGACY_AND_JUDGED
    assert fields((await repo.decision_inputs(db, "L1"))[2]) == LEGACY_AND_JUDGED
    assert fields((await repo.decision_inputs_many(db, ["L1"]))["L1"][2]) == LEGACY_AND_JUDGED
    assert fields((await repo.report_rows(db, Protocol.CXR.value, provenance=False))[1]) == LEGACY_AND_JUDGED
    [accepted] = await repo.accepted_studies(db, Protocol.CXR.value)
    assert fields(accepted["votes"]) == LEGACY_AND_JUDGED
    assert all("grades" not in v and "protocol" not in v for v in accepted["votes"])


async def test_a_report_read_decodes_one_json_value_per_vote(db, handlers):
    """A vote with a judgement also has flat columns ('[]' by default); reading them too cost two
    more JSON decodes per vote, for values that are dropped (a third of the card agreement's CPU
    once the last study is decided)."""
    import psycopg.types.json

    from services.consensus import repo
    for i in range(4):
        await decide(db, handlers, f"J{i}", ["agree_all", "agree_mostly", "disagree"])
    _DECODED.clear()
    psycopg.types.json.set_json_loads(_counting_loads, db)
    studies, votes = await repo.report_rows(db, Protocol.CXR.value, provenance=False)
    assert (len(studies), len(votes)) == (4, 12)
    # each study's suggestion and effective labels, and each vote's judgement: nothing more
    assert len(_DECODED) == 2 * len(studies) + len(votes)


_DECODED: list[bytes] = []


def _counting_loads(data: bytes):
    """json.loads, counting its calls (a module-level function: psycopg keeps loaders it is given)."""
    _DECODED.append(data)
    return json.loads(data)
