"""`POST /api/v1/studies/batch` against real Postgres and S3: each study of a batch gets the outcome
its own `POST /api/v1/studies` would (status and reason), one refused study never stops the
others, and a malformed batch is refused whole with nothing stored."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.integration.test_dicom_images import gateway, settings_for
from tests.integration.test_ingest import REPORT, counts
from tests.support.factories import dicom_bytes

pytestmark = pytest.mark.integration


async def post_batch(client, studies: list[dict], files: list[tuple[str, bytes]], **form):
    return await client.post("/api/v1/studies/batch",
                             data={"studies": json.dumps(studies), **{k: str(v).lower() for k, v in form.items()}},
                             files=[("files", (name, data, "application/dicom")) for name, data in files])


async def test_each_study_of_a_batch_gets_its_own_outcome_and_a_second_batch_adds_nothing(infra, gateway_dsn,
                                                                                         tmp_path):
    good = [dicom_bytes(tmp_path, f"BA-{i}", f"P-{i}") for i in (1, 2)]
    raw = dicom_bytes(tmp_path, "BA-3", "MRN-9", identifiable=True)  # identifying data, no scrub: 422
    twin = dicom_bytes(tmp_path, "BA-4", "P-4")
    studies = [{"study_id": "BA-1", "patient_id": "P-1", "report": REPORT, "files": 1},
               {"study_id": "BA-2", "patient_id": "P-2", "report": REPORT, "files": 1},
               {"study_id": "BA-3", "patient_id": "P-3", "report": REPORT, "files": 1},
               {"study_id": "BA-4", "patient_id": "P-4", "report": "", "files": 1},  # empty report: 422
               {"study_id": "BA-5", "patient_id": "P-1", "report": REPORT, "files": 1}]  # BA-1's images again
    files = [("a.dcm", good[0]), ("b.dcm", good[1]), ("c.dcm", raw), ("d.dcm", twin), ("e.dcm", good[0])]
    limit = max(len(d) for d in (*good, raw, twin))
    app, ctx, client = await gateway(settings_for(infra, gateway_dsn, max_object_bytes=limit))
    try:
        first = await post_batch(client, studies[:4], files[:4])
        again = await post_batch(client, studies[:2] + studies[4:], files[:2] + files[4:])
        big = await post_batch(client, [{"study_id": "BA-6", "patient_id": "P-6", "report": REPORT, "files": 1}],
                               [("big.dcm", good[1] + b"\0" * (limit + 1 - len(good[1])))])  # over the bound: 413
    finally:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
    assert first.status_code == 200, first.text
    outcome = {o["study_id"]: o for o in first.json()["studies"]}
    assert [o["study_id"] for o in first.json()["studies"]] == ["BA-1", "BA-2", "BA-3", "BA-4"]
    assert [o["status"] for o in first.json()["studies"]] == ["ingested", "ingested", "refused", "refused"]
    assert (outcome["BA-1"]["http_status"], outcome["BA-1"]["objects"]) == (201, 1)
    assert outcome["BA-3"]["http_status"] == 422
    assert "identifying data" in outcome["BA-3"]["detail"]
    assert outcome["BA-4"]["http_status"] == 422 and "report text is empty" in outcome["BA-4"]["detail"]
    # the second batch: BA-1 and BA-2 are present (200 each), BA-5 brings BA-1's images under another id
    assert [(o["status"], o["http_status"]) for o in again.json()["studies"]] == [
        ("duplicate", 200), ("duplicate", 200), ("refused", 409)]
    assert "StudyInstanceUID" in again.json()["studies"][2]["detail"] and "is already study BA-1's" in \
        again.json()["studies"][2]["detail"]
    assert big.json()["studies"][0]["http_status"] == 413 and "over the limit" in big.json()["studies"][0]["detail"]
    assert counts(gateway_dsn) == (2, 2, 2)
    # each ingested study's one-instance list travels in its event: its row records no stored manifest
    with psycopg.connect(gateway_dsn) as conn:
        keys = dict(conn.execute("SELECT study_id, objects_manifest_key FROM studies ORDER BY study_id").fetchall())
    assert keys == {"BA-1": "", "BA-2": ""}


@pytest.mark.parametrize(("studies", "files", "detail"), [
    ("not json", 1, "studies: not a list"),
    (json.dumps([{"study_id": "BM-1", "patient_id": "P-1", "report": REPORT, "files": 2}]), 1,
     "the studies name 2 files; the request carries 1"),
    (json.dumps([{"study_id": "BM-1", "patient_id": "P-1", "report": REPORT, "files": 0}]), 1,
     "studies: not a list"),
    (json.dumps([]), 1, "a batch holds 1 to"),
])
async def test_a_malformed_batch_is_refused_whole_and_stores_nothing(infra, gateway_dsn, tmp_path, studies, files,
                                                                    detail):
    data = dicom_bytes(tmp_path, "BM-1", "P-1")
    app, ctx, client = await gateway(settings_for(infra, gateway_dsn))
    try:
        resp = await client.post("/api/v1/studies/batch", data={"studies": studies},
                                 files=[("files", (f"{i}.dcm", data, "application/dicom")) for i in range(files)])
    finally:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
    assert resp.status_code == 422 and resp.headers["content-type"].startswith("application/problem+json")
    assert detail in resp.json()["detail"]
    assert counts(gateway_dsn) == (0, 0, 0)


async def test_studies_of_one_batch_are_checked_against_each_other_as_single_requests_would_be(infra, gateway_dsn,
                                                                                             tmp_path):
    """The batch's contamination checks read the stored studies once for the whole batch; a study
    is still refused for sharing images or a patient with one accepted earlier in the same batch."""
    from tests.support.factories import reexported

    first = dicom_bytes(tmp_path, "BW-1", "P-1")
    studies = [{"study_id": "BW-1", "patient_id": "P-1", "report": REPORT, "files": 1},
               {"study_id": "BW-2", "patient_id": "P-1", "report": REPORT, "files": 1},  # BW-1's file: 409
               {"study_id": "BW-3", "patient_id": "P-3", "report": REPORT, "files": 1},
               {"study_id": "BW-4", "patient_id": "P-4", "report": REPORT, "files": 1},  # BW-3's pixels: 409
               {"study_id": "BW-6", "patient_id": "P-6", "report": REPORT, "files": 1},
               {"study_id": "BW-7", "patient_id": "P-7", "report": REPORT, "files": 1},  # BW-6's patient: 409
               {"study_id": "BW-1", "patient_id": "P-1", "report": REPORT, "files": 1}]  # BW-1 again: 200
    files = [("a.dcm", first), ("b.dcm", first),
             ("c.dcm", reexported("MR_small.dcm", patient_id="MRN-3")),
             ("d.dcm", reexported("MR_small.dcm", patient_id="MRN-4", syntax="1.2.840.10008.1.2.5")),
             ("e.dcm", dicom_bytes(tmp_path, "BW-6", "MRN-6", identifiable=True, seed=6)),
             ("f.dcm", dicom_bytes(tmp_path, "BW-7", "MRN-6", identifiable=True, seed=7)),
             ("g.dcm", first)]
    app, ctx, client = await gateway(settings_for(infra, gateway_dsn))
    try:
        resp = await post_batch(client, studies, files, scrub=True)
    finally:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
    assert resp.status_code == 200, resp.text
    got = resp.json()["studies"]
    assert [(o["study_id"], o["status"], o["http_status"]) for o in got] == [
        ("BW-1", "ingested", 201), ("BW-2", "refused", 409), ("BW-3", "ingested", 201), ("BW-4", "refused", 409),
        ("BW-6", "ingested", 201), ("BW-7", "refused", 409), ("BW-1", "duplicate", 200)]
    assert "StudyInstanceUID" in got[1]["detail"] and "is already study BW-1's" in got[1]["detail"]
    assert "the pixels of SOPInstanceUID" in got[3]["detail"] and "already study BW-3's" in got[3]["detail"]
    assert "was ingested as patient 'P-6' with study BW-6" in got[5]["detail"]
    assert counts(gateway_dsn) == (3, 3, 3)  # one row, one object and one event per study taken


async def test_a_batch_stores_the_manifest_of_its_long_study_only_and_each_event_reads_back_its_list(
        infra, gateway_dsn, tmp_path):
    """Short lists travel in their events; the long one (a lumbar MRI grown past the inline bound)
    is stored before the transaction, referenced by its event and named by its study's row."""
    import csv

    from radcurate.bulk_ingest import study_paths
    from radcurate.demo import store_for
    from radcurate.synth.lumbar import synth_lumbar
    from services.common import manifests
    from services.common.contracts import parse_event
    from tests.support.factories import add_series

    synth_lumbar(1, seed=11, out_dir=tmp_path / "lumbar")
    row = next(csv.DictReader(open(tmp_path / "lumbar" / "reports.csv")))
    add_series(tmp_path / "lumbar" / "dicom" / row["study_id"], instances=40)
    long = [(name.replace("/", "_"), path.read_bytes()) for name, path in study_paths(tmp_path / "lumbar",
                                                                                        row["study_id"])]
    studies = [{"study_id": "BL-1", "patient_id": "P-1", "report": REPORT, "files": 1},
               {"study_id": "BL-2", "patient_id": row["patient_id"], "report": row["report"], "files": 40},
               {"study_id": "BL-3", "patient_id": "P-3", "report": REPORT, "files": 1}]
    files = [("a.dcm", dicom_bytes(tmp_path, "BL-1", "P-1")), *long, ("c.dcm", dicom_bytes(tmp_path, "BL-3", "P-3"))]
    app, ctx, client = await gateway(settings_for(infra, gateway_dsn))
    try:
        resp = await post_batch(client, studies, files)
    finally:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
    assert resp.status_code == 200, resp.text
    assert [(o["status"], o["objects"]) for o in resp.json()["studies"]] == [("ingested", 1), ("ingested", 40),
                                                                          ("ingested", 1)]
    with psycopg.connect(gateway_dsn) as conn:
        keys = dict(conn.execute("SELECT study_id, objects_manifest_key FROM studies").fetchall())
        events = {e.study_id: e for e in (parse_event(r[0]) for r in conn.execute("SELECT payload FROM outbox"))}
    store, bucket = store_for(infra), infra["buckets"]["objects"]
    ref = events["BL-2"].objects_manifest
    assert ref.by_reference and ref.count == 40 and keys == {"BL-1": "", "BL-2": ref.key, "BL-3": ""}
    assert ref.key in {k for k, _ in store.listing(bucket, f"{manifests.PREFIX}/BL-2/")}
    for sid in ("BL-1", "BL-3"):
        assert not events[sid].objects_manifest.by_reference
        assert list(store.listing(bucket, f"{manifests.PREFIX}/{sid}/")) == []
    listed = {sid: manifests.get_objects(store, bucket, sid, e.objects_manifest) for sid, e in events.items()}
    assert {sid: len(objs) for sid, objs in listed.items()} == {"BL-1": 1, "BL-2": 40, "BL-3": 1}
    with psycopg.connect(gateway_dsn) as conn:
        stored = dict(conn.execute("SELECT study_id, count(*) FROM study_objects GROUP BY study_id").fetchall())
    assert stored == {sid: len(objs) for sid, objs in listed.items()}


async def test_a_batch_sends_as_many_statements_for_six_studies_as_for_two_and_stores_each_value_exactly(
        infra, gateway_dsn, tmp_path, monkeypatch):
    """The batch's rows go in one INSERT per table and its stored holders are read in one statement
    per look-up, whatever its size (executemany sent a statement per row: 2 x 6 for six studies);
    each value reads back as the single path's parse gave it (a date, floats, an integer, JSON)."""
    from services.gateway.ingest import FACTS, parse_instance

    sent: list[str] = []
    for method in ("execute", "executemany"):
        original = getattr(psycopg.AsyncCursor, method)

        def spy(self, query, params=None, *args, _original=original, _many=method == "executemany", **kwargs):
            text = query if isinstance(query, str) else str(query)
            if (" studies" in text or "study_objects" in text) and "assignments" not in text:  # not derivatives'

                sent.extend([text] * (len(params) if _many and params is not None else 1))
            return _original(self, query, params, *args, **kwargs)

        monkeypatch.setattr(psycopg.AsyncCursor, method, spy)
    files = {f"BS-{i}": dicom_bytes(tmp_path, f"BS-{i}", f"P-{i}", seed=i) for i in range(1, 11)}
    studies = [{"study_id": sid, "patient_id": f"P-{sid[3:]}", "report": REPORT, "files": 1} for sid in files]

    async def batch(first: int, last: int) -> list[str]:
        sent.clear()
        resp = await post_batch(client, studies[first:last], [(f"{s}.dcm", files[s]) for s in list(files)[first:last]])
        assert [o["status"] for o in resp.json()["studies"]] == ["ingested"] * (last - first), resp.text
        return list(sent)

    app, ctx, client = await gateway(settings_for(infra, gateway_dsn))
    try:
        await batch(0, 2)  # the first batch also warms the app (its start-up statements are not the batch's)
        two, six = await batch(2, 4), await batch(4, 10)
    finally:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
    for_two, first, for_six = len(two), two, len(six)
    assert for_six == for_two, f"{for_two} statements for two studies, {for_six} for six: {first} then {six}"
    with psycopg.connect(gateway_dsn) as conn:
        rows = {r[0]: r[1:] for r in conn.execute(f"SELECT study_id, {', '.join(FACTS)} FROM studies").fetchall()}
        objects = {r[0]: r[1:] for r in conn.execute(
            "SELECT study_id, instance_number, pixel_spacing, sha256, pixel_sha256, sop_instance_uid"
            " FROM study_objects").fetchall()}
    for sid, data in files.items():
        parsed, _ = parse_instance(f"{sid}.dcm", data, scrub=False)
        assert rows[sid] == tuple(parsed.facts[k] for k in FACTS)
        assert rows[sid][3] is not None and rows[sid][4] is not None  # a date and a window were there to store
        o = parsed.obj
        assert objects[sid] == (o.instance_number, list(o.pixel_spacing) if o.pixel_spacing else None, o.sha256,
                                o.pixel_sha256, o.sop_instance_uid)


async def test_the_look_up_tables_are_analyzed_once_the_process_has_ingested_enough_studies(
        infra, gateway_dsn, tmp_path, monkeypatch):
    """A bulk load into fresh tables outruns autovacuum (a minute): without statistics the planner
    reads every row of both tables for the duplicate checks, twice per batch. The batch path has
    them analyzed at its marks (ingest_batch.Statistics), after the batch is in."""
    from services.gateway import ingest_batch

    monkeypatch.setattr(ingest_batch, "_statistics", ingest_batch.Statistics(first=2))

    def analyzed() -> dict[str, bool]:
        with psycopg.connect(gateway_dsn) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            return {r[0]: r[1] is not None for r in conn.execute(
                "SELECT relname, last_analyze FROM pg_stat_user_tables WHERE schemaname = current_schema()"
                " AND relname IN ('studies', 'study_objects')")}

    files = {f"BZ-{i}": dicom_bytes(tmp_path, f"BZ-{i}", f"P-{i}", seed=i) for i in (1, 2)}
    app, ctx, client = await gateway(settings_for(infra, gateway_dsn))
    try:
        for sid, data in files.items():
            resp = await post_batch(client, [{"study_id": sid, "patient_id": f"P-{sid[3:]}", "report": REPORT,
                                              "files": 1}], [(f"{sid}.dcm", data)])
            assert resp.json()["studies"][0]["status"] == "ingested", resp.text
            if sid == "BZ-1":  # one study in: below the mark
                assert analyzed() == {"studies": False, "study_objects": False}
    finally:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
    assert analyzed() == {"studies": True, "study_objects": True}
