"""Ingest against real Postgres and S3: what is stored, what is refused, and that refusals change nothing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import psycopg
import pydicom
import pytest

from radcurate.bulk_ingest import ingest_dir
from radcurate.client import Gateway
from services.common import deid, manifests
from services.common.contracts import ObjectsManifest
from services.common.db import open_pool
from services.common.objectstore import ObjectStore
from services.gateway.app import GatewaySettings, build_app
from services.gateway.ingest import IngestError, PatientConflict, PatientMismatch, ingest_study
from tests.support.factories import dicom_bytes, reexported, study_folder

pytestmark = pytest.mark.integration
REPORT = "Small left pleural effusion. No pneumothorax."
TOKEN = "bulk-ingest-admin-token"


@pytest.fixture
def store(infra: dict) -> ObjectStore:
    from radcurate.demo import store_for

    return store_for(infra)


@contextlib.asynccontextmanager
async def gateway_api(infra: dict, dsn: str, **settings) -> AsyncIterator[Gateway]:
    """The gateway app in this process (its lifespan entered), and its admin's client of the API:
    bulk ingest goes through `POST /api/v1/studies` like `radcurate ingest DIR`."""
    s3 = infra["s3"]
    app = build_app(GatewaySettings(database_url=dsn, kafka_bootstrap=infra["kafka"]["bootstrap"],
                                    s3_endpoint=s3["endpoint"], s3_access_key=s3["access_key"],
                                    s3_secret_key=s3["secret_key"], objects_bucket=infra["buckets"]["objects"],
                                    admin_token=TOKEN, **settings))
    async with app.router.lifespan_context(app):
        api = Gateway("http://gateway", TOKEN,
                      client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=60))
        try:
            yield api
        finally:
            await api.aclose()


def counts(dsn: str) -> tuple[int, int, int]:
    with psycopg.connect(dsn) as conn:
        return tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in ("studies", "study_objects", "outbox"))


async def test_a_study_is_stored_by_content_and_announced_once(gateway_dsn, store, infra, tmp_path):
    data = dicom_bytes(tmp_path, "ING-1", "P-1")
    pool = await open_pool(gateway_dsn)
    try:
        first = await ingest_study(pool, store, infra["buckets"]["objects"], study_id="ING-1", patient_id="P-1",
                                   report=REPORT, files=[("a.dcm", data)])
        again = await ingest_study(pool, store, infra["buckets"]["objects"], study_id="ING-1", patient_id="P-1",
                                   report=REPORT, files=[("a.dcm", data)])
    finally:
        await pool.close()
    assert (first.status, again.status) == ("ingested", "duplicate")
    key = first.objects[0].object_key
    assert key.endswith(first.objects[0].sha256)
    assert store.get_bytes(infra["buckets"]["objects"], key) == data
    assert counts(gateway_dsn) == (1, 1, 1)
    with psycopg.connect(gateway_dsn) as conn:
        topic, payload = conn.execute("SELECT topic, payload FROM outbox").fetchone()
    assert topic == "report-ingested" and "PixelData" not in str(payload)
    # A one-instance list travels in the event (issue 15): no manifest is stored, the study's row says so.
    manifest = ObjectsManifest.model_validate(payload["objects_manifest"])
    assert not manifest.by_reference and [o.object_key for o in manifests.inline_objects(manifest)] == [key]
    assert list(store.listing(infra["buckets"]["objects"], f"{manifests.PREFIX}/ING-1/")) == []
    with psycopg.connect(gateway_dsn) as conn:
        assert conn.execute("SELECT objects_manifest_key FROM studies").fetchall() == [("",)]


@pytest.mark.parametrize(("name", "make", "message"), [
    ("not DICOM", lambda tmp: b"%PDF-1.4 not an image", "not a readable DICOM file"),
    ("identifying", lambda tmp: dicom_bytes(tmp, "ING-2", "P-2", identifiable=True), "identifying data"),
])
async def test_bad_files_are_refused_with_a_reason_and_nothing_is_stored(gateway_dsn, store, infra, tmp_path, name,
                                                                         make, message):
    pool = await open_pool(gateway_dsn)
    try:
        with pytest.raises(IngestError, match=message):
            await ingest_study(pool, store, infra["buckets"]["objects"], study_id="ING-2", patient_id="P-2",
                               report=REPORT, files=[("x.dcm", make(tmp_path))])
    finally:
        await pool.close()
    assert counts(gateway_dsn) == (0, 0, 0)


async def test_an_empty_report_is_refused(gateway_dsn, store, infra, tmp_path):
    pool = await open_pool(gateway_dsn)
    try:
        with pytest.raises(IngestError, match="report text is empty"):
            await ingest_study(pool, store, infra["buckets"]["objects"], study_id="ING-3", patient_id="P-3",
                               report="   ", files=[("a.dcm", dicom_bytes(tmp_path, "ING-3", "P-3"))])
    finally:
        await pool.close()
    assert counts(gateway_dsn) == (0, 0, 0)


async def test_scrub_removes_identifying_data_before_storing(gateway_dsn, store, infra, tmp_path):
    import io

    pool = await open_pool(gateway_dsn)
    try:
        result = await ingest_study(pool, store, infra["buckets"]["objects"], study_id="ING-4", patient_id="P-4",
                                    report=REPORT, files=[("a.dcm", dicom_bytes(tmp_path, "ING-4", identifiable=True))],
                                    scrub=True)
    finally:
        await pool.close()
    assert "PatientName" in result.scrubbed
    stored = pydicom.dcmread(io.BytesIO(store.get_bytes(infra["buckets"]["objects"], result.objects[0].object_key)))
    assert stored.PatientName == stored.PatientID == "P-4"  # the pseudonym, not a name or record number
    assert stored.AccessionNumber == "" and stored.PatientIdentityRemoved == "YES" and deid.violations(stored) == []


async def test_bulk_ingest_takes_the_good_studies_and_lists_the_bad_ones(gateway_dsn, store, infra, tmp_path):
    folder = study_folder(tmp_path / "batch", [
        ("B-1", "P-1", REPORT), ("B-2", "P-1", "Cardiomegaly."), ("B-3", "P-3", "Normal chest."),
        ("B-4", "P-4", "Normal chest."), ("B-5", "P-5", "")],
        identifiable={"B-3"}, not_dicom={"B-4"})
    async with gateway_api(infra, gateway_dsn) as api:
        summary = await ingest_dir(folder, api)
    assert summary.ingested == 2
    assert [sid for sid, _ in summary.rejected] == ["B-3", "B-4", "B-5"]
    assert "identifying data" in summary.rejected[0][1]
    assert "not a readable DICOM" in summary.rejected[1][1]
    assert "report text is empty" in summary.rejected[2][1]
    assert counts(gateway_dsn) == (2, 2, 2)


async def test_bulk_ingest_refuses_objects_over_the_bounds_by_name_and_streams_the_rest(gateway_dsn, store, infra,
                                                                                       tmp_path):
    """A real 1955 × 1841 JPEG 2000 chest radiograph over a 2 M pixel bound is refused (before any
    decode) with the file and the bound named; the synthetic study beside it goes in, stored
    byte for byte from its file."""
    import shutil

    from pydicom.data import get_testdata_file

    folder = study_folder(tmp_path / "bounds", [("S-1", "P-1", REPORT), ("RG1", "P-2", REPORT)])
    (folder / "dicom" / "RG1.dcm").unlink()
    (folder / "dicom" / "RG1").mkdir()
    shutil.copy(get_testdata_file("RG1_J2KR.dcm", download=False), folder / "dicom" / "RG1" / "frontal.dcm")
    async with gateway_api(infra, gateway_dsn, max_pixels=2_000_000) as api:
        summary = await ingest_dir(folder, api, scrub=True)
    assert summary.ingested == 1
    assert summary.rejected == [("RG1", "frontal.dcm: 1955 × 1841 pixels × 1 frame(s) is over the limit of "
                                        "2000000 pixels per object")]
    assert counts(gateway_dsn) == (1, 1, 1)
    with psycopg.connect(gateway_dsn) as conn:
        key = conn.execute("SELECT object_key FROM study_objects").fetchone()[0]
    assert store.get_bytes(infra["buckets"]["objects"], key) == (folder / "dicom" / "S-1.dcm").read_bytes()


async def test_the_same_images_under_another_study_id_are_refused(gateway_dsn, store, infra, tmp_path):
    """Issue 11 item 11: a study's images ingested again under a second study id (or one of its
    instances inside another study) could land on both sides of a release's split."""
    import io

    from pydicom.uid import generate_uid

    data = dicom_bytes(tmp_path, "TWIN-1", "P-1")
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyInstanceUID = generate_uid()  # a new study, but the same SOP instance
    moved = io.BytesIO()
    ds.save_as(moved, enforce_file_format=True)
    pool = await open_pool(gateway_dsn)
    try:
        first = await ingest_study(pool, store, infra["buckets"]["objects"], study_id="TWIN-1", patient_id="P-1",
                                   report=REPORT, files=[("a.dcm", data)])
        assert first.status == "ingested"
        with pytest.raises(IngestError, match=r"TWIN-2: StudyInstanceUID .* is already study TWIN-1's"):
            await ingest_study(pool, store, infra["buckets"]["objects"], study_id="TWIN-2", patient_id="P-1",
                               report=REPORT, files=[("a.dcm", data)])
        with pytest.raises(IngestError, match=rf"TWIN-3: SOPInstanceUID {ds.SOPInstanceUID} is already study TWIN-1's"):
            await ingest_study(pool, store, infra["buckets"]["objects"], study_id="TWIN-3", patient_id="P-1",
                               report=REPORT, files=[("a.dcm", moved.getvalue())])
        again = await ingest_study(pool, store, infra["buckets"]["objects"], study_id="TWIN-1", patient_id="P-1",
                                   report=REPORT, files=[("a.dcm", data)])
        assert again.status == "duplicate"  # the same study id again is still a no-op
    finally:
        await pool.close()
    assert counts(gateway_dsn) == (1, 1, 1)


async def test_the_same_image_reexported_with_new_uids_is_refused_naming_the_other_study(gateway_dsn, store, infra):
    """Issue 11 item 11: a re-export of an ingested image (new UIDs, another transfer syntax, so
    another file sha256 and, scrubbed, other UIDs again) is the same image under a second study id:
    refused with the study that holds it (409 at the API); another image of the patient passes."""
    from pydicom.uid import RLELossless

    from services.gateway.ingest import SharedImages

    bucket = infra["buckets"]["objects"]
    first_export = reexported("MR_small.dcm", patient_id="MRN-1")
    second_export = reexported("MR_small.dcm", patient_id="OTHER-PACS-77", syntax=RLELossless)
    pool = await open_pool(gateway_dsn)
    try:
        first = await ingest_study(pool, store, bucket, study_id="PX-1", patient_id="P-1", report=REPORT,
                                   files=[("mr.dcm", first_export)], scrub=True)
        with pytest.raises(SharedImages, match=r"PX-2: the pixels of SOPInstanceUID [0-9.]+ are already study PX-1's"):
            await ingest_study(pool, store, bucket, study_id="PX-2", patient_id="P-2", report=REPORT,
                               files=[("mr-rle.dcm", second_export)], scrub=True)
        assert counts(gateway_dsn) == (1, 1, 1)
        other = await ingest_study(pool, store, bucket, study_id="PX-3", patient_id="P-1", report=REPORT,
                                   files=[("ct.dcm", reexported("CT_small.dcm", patient_id="MRN-1"))], scrub=True)
    finally:
        await pool.close()
    assert (first.status, other.status) == ("ingested", "ingested")
    assert first.objects[0].sha256 != other.objects[0].sha256
    with psycopg.connect(gateway_dsn) as conn:
        stored = dict(conn.execute("SELECT study_id, pixel_sha256 FROM study_objects").fetchall())
    assert stored == {"PX-1": first.objects[0].pixel_sha256, "PX-3": other.objects[0].pixel_sha256}
    assert None not in stored.values() and len(set(stored.values())) == 2


async def test_two_twins_ingested_at_once_are_not_both_taken(gateway_dsn, store, infra):
    """The check runs again in the transaction, under locks on the images' keys: of two
    re-exports of one image ingested concurrently under two study ids, both past the first check
    (they meet at their object writes), one is refused."""
    import asyncio
    import threading

    from services.common.objectstore import ObjectStore

    both_checked = threading.Barrier(2, timeout=60)

    class Meeting(ObjectStore):
        def put_stream(self, bucket: str, key: str, fp, length: int, content_type: str = "",
                       sha256: str | None = None) -> None:
            both_checked.wait()  # neither transaction starts before both passed the first check
            super().put_stream(bucket, key, fp, length, content_type, sha256)

    bucket = infra["buckets"]["objects"]
    pool = await open_pool(gateway_dsn, max_size=4)
    try:
        results = await asyncio.gather(*(
            ingest_study(pool, Meeting(store.client), bucket, study_id=f"RACE-{i}", patient_id=f"P-{i}",
                         report=REPORT, scrub=True,
                         files=[("mr.dcm", reexported("MR_small.dcm", patient_id=f"MRN-{i}"))])
            for i in range(2)), return_exceptions=True)
    finally:
        await pool.close()
    assert sorted(type(r).__name__ for r in results) == ["IngestResult", "SharedImages"], results
    assert counts(gateway_dsn) == (1, 1, 1)


async def test_the_ingest_api_answers_409_for_a_reexported_image(infra, gateway_dsn):
    from tests.integration.test_dicom_images import gateway, settings_for

    app, ctx, client = await gateway(settings_for(infra, gateway_dsn))

    async def post(study_id: str, patient_id: str, data: bytes):
        return await client.post("/api/v1/studies", data={"study_id": study_id, "patient_id": patient_id,
                                                          "report": REPORT, "scrub": "true"},
                                 files=[("files", ("a.dcm", data, "application/dicom"))])

    try:
        first = await post("PXA-1", "P-1", reexported("MR_small.dcm", patient_id="MRN-1"))
        twin = await post("PXA-2", "P-2", reexported("MR_small.dcm", patient_id="MRN-2"))
    finally:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
    assert first.status_code == 201
    assert twin.status_code == 409 and twin.headers["content-type"].startswith("application/problem+json")
    assert "already study PXA-1's" in twin.json()["detail"]
    assert counts(gateway_dsn)[0] == 1


async def test_a_folder_with_burned_in_annotation_is_refused_unless_the_curator_overrides(gateway_dsn, store, infra,
                                                                                          tmp_path):
    folder = study_folder(tmp_path / "burned", [("BI-1", "P-1", REPORT)])
    path = folder / "dicom" / "BI-1.dcm"
    ds = pydicom.dcmread(path)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(path, enforce_file_format=True)
    async with gateway_api(infra, gateway_dsn) as api:
        refused = await ingest_dir(folder, api, scrub=True)
        assert refused.ingested == 0 and "BurnedInAnnotation is YES" in refused.rejected[0][1]
        assert counts(gateway_dsn) == (0, 0, 0)
        overridden = await ingest_dir(folder, api, scrub=True, allow_burned_in=True)
    assert overridden.ingested == 1 and counts(gateway_dsn) == (1, 1, 1)


# --- issue 11 item 11: the form's patient id against the DICOM's PatientID ----------------------


def studies_rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT study_id, patient_id, dicom_patient_key FROM studies ORDER BY study_id").fetchall()


async def test_a_form_patient_id_that_is_not_the_de_identified_files_is_refused_and_nothing_stored(
        gateway_dsn, store, infra, tmp_path):
    bucket = infra["buckets"]["objects"]
    pool = await open_pool(gateway_dsn)
    try:
        refused = "PatientID 'PT-0042' of this object \\(stored as it is\\) is not the form's"
        with pytest.raises(PatientMismatch, match=refused):
            await ingest_study(pool, store, bucket, study_id="PM-1", patient_id="PT-0043", report=REPORT,
                               files=[("a.dcm", dicom_bytes(tmp_path, "PM-1", "PT-0042"))])
        assert counts(gateway_dsn) == (0, 0, 0)
        # Spellings of one id that real exports produce are the same patient: case and blanks...
        ok = await ingest_study(pool, store, bucket, study_id="PM-1", patient_id=" pt-0042 ", report=REPORT,
                                files=[("a.dcm", dicom_bytes(tmp_path, "PM-1", "PT-0042"))])
        # ... and a numeric id's leading zeros (a spreadsheet drops them).
        zeros = await ingest_study(pool, store, bucket, study_id="PM-2", patient_id="12345", report=REPORT,
                                   files=[("a.dcm", dicom_bytes(tmp_path, "PM-2", "0012345"))])
        (tmp_path / "b").mkdir()  # the same study's file, of another patient
        with pytest.raises(PatientMismatch, match="more than one PatientID"):
            await ingest_study(pool, store, bucket, study_id="PM-3", patient_id="P-3", report=REPORT,
                               files=[("a.dcm", dicom_bytes(tmp_path, "PM-3", "MRN3", identifiable=True)),
                                      ("b.dcm", dicom_bytes(tmp_path / "b", "PM-3", "MRN4", identifiable=True))],
                               scrub=True)
    finally:
        await pool.close()
    assert (ok.status, zeros.status) == ("ingested", "ingested")
    assert counts(gateway_dsn) == (2, 2, 2)


async def test_one_patient_under_a_second_patient_id_is_refused_with_the_id_to_use(gateway_dsn, store, infra, tmp_path):
    """Raw files, scrubbed at ingest: the form's id is the curator's pseudonym, so it cannot equal
    the record number in the files; the same record number under a second pseudonym is the error
    (the split keeps a patient id's studies together, so two ids could straddle it)."""
    bucket = infra["buckets"]["objects"]

    def raw(study_id: str, mrn: str) -> list:
        return [("a.dcm", dicom_bytes(tmp_path, study_id, mrn, identifiable=True))]

    pool = await open_pool(gateway_dsn)
    try:
        first = await ingest_study(pool, store, bucket, study_id="PC-1", patient_id="P-A", report=REPORT,
                                   files=raw("PC-1", "MRN-0777"), scrub=True)
        with pytest.raises(PatientConflict, match="ingested as patient 'P-A' with study PC-1, not 'P-B'"):
            await ingest_study(pool, store, bucket, study_id="PC-2", patient_id="P-B", report=REPORT,
                               files=raw("PC-2", " mrn-0777"), scrub=True)  # another spelling, one patient
        assert counts(gateway_dsn) == (1, 1, 1)
        second = await ingest_study(pool, store, bucket, study_id="PC-2", patient_id="P-A", report=REPORT,
                                    files=raw("PC-2", " mrn-0777"), scrub=True)
        other = await ingest_study(pool, store, bucket, study_id="PC-3", patient_id="P-B", report=REPORT,
                                   files=raw("PC-3", "MRN-0778"), scrub=True)  # another patient
    finally:
        await pool.close()
    assert (first.status, second.status, other.status) == ("ingested",) * 3
    rows = studies_rows(gateway_dsn)
    assert [r[:2] for r in rows] == [("PC-1", "P-A"), ("PC-2", "P-A"), ("PC-3", "P-B")]
    assert rows[0][2] == rows[1][2] != rows[2][2] and "0777" not in rows[0][2]  # a keyed digest, not the MRN


async def test_the_split_keeps_one_dicom_patient_under_two_patient_ids_on_one_side(gateway_dsn, store, infra,
                                                                                    tmp_path):
    """Item 2 of the contamination work, from ingest to the split: each object's keyed PatientID
    digest travels in the instance manifest (in the events) to where the split runs, which unions studies of
    one DICOM patient whatever patient id their rows carry (a study recorded under a second id
    before ingest checked it: here PC-2's row says 'P-B')."""
    from services.common.contracts import parse_event
    from services.common.protocols.kit.selection import AcceptedStudy, image_keys, split_by_patient

    bucket = infra["buckets"]["objects"]
    pool = await open_pool(gateway_dsn)
    try:
        for study_id, mrn in (("PC-1", "MRN-0777"), ("PC-2", " mrn-0777"), ("PC-3", "MRN-0778")):
            await ingest_study(pool, store, bucket, study_id=study_id, patient_id="P-A", report=REPORT, scrub=True,
                               files=[("a.dcm", dicom_bytes(tmp_path, study_id, mrn, identifiable=True))])
    finally:
        await pool.close()
    with psycopg.connect(gateway_dsn) as conn:
        events = [parse_event(r[0]) for r in conn.execute("SELECT payload FROM outbox ORDER BY id")]
    objects = {e.study_id: manifests.get_objects(store, bucket, e.study_id, e.objects_manifest) for e in events}
    keys = {sid: {o.patient_key for o in objs} for sid, objs in objects.items()}
    assert keys["PC-1"] == keys["PC-2"] != keys["PC-3"] and None not in keys["PC-1"] | keys["PC-3"]
    assert not any("0777" in k for k in keys["PC-1"])  # a keyed digest, never the record number
    rows = {"PC-1": "P-A", "PC-2": "P-B", "PC-3": "P-C"}
    accepted = [AcceptedStudy(sid, rows[sid], frozenset({"a"}), image_keys([o.model_dump() for o in objects[sid]]))
                for sid in rows]
    accepted += [AcceptedStudy(f"F{i}", f"PF{i}", frozenset({"ab"[i % 2]}), frozenset()) for i in range(16)]
    sides = [split_by_patient(accepted, 0.5, ["a", "b"], seed)[0] for seed in range(12)]
    assert all(("PC-1" in h) == ("PC-2" in h) for h in sides)
    unlinked = [AcceptedStudy(s.study_id, s.patient_id, s.labels) for s in accepted]
    assert any(("PC-1" in h) != ("PC-2" in h)
               for h in (split_by_patient(unlinked, 0.5, ["a", "b"], seed)[0] for seed in range(12)))


async def test_bulk_ingest_lists_a_row_whose_patient_id_is_not_the_files(gateway_dsn, store, infra, tmp_path):
    folder = study_folder(tmp_path / "rows", [("R-1", "P-1", REPORT), ("R-2", "P-2", REPORT)])
    text = (folder / "reports.csv").read_text()
    (folder / "reports.csv").write_text(text.replace("R-2,P-2", "R-2,P-1"))  # the row above's patient
    async with gateway_api(infra, gateway_dsn) as api:
        summary = await ingest_dir(folder, api)
    assert summary.ingested == 1 and [sid for sid, _ in summary.rejected] == ["R-2"]
    assert ("PatientID 'P-2' of this object (stored as it is) is not the form's patient id 'P-1'"
            in summary.rejected[0][1])


async def test_the_ingest_api_answers_409_for_a_second_patient_id_and_422_for_a_mismatch(infra, gateway_dsn, tmp_path):
    from tests.integration.test_dicom_images import gateway, settings_for

    app, ctx, client = await gateway(settings_for(infra, gateway_dsn))

    async def post(study_id: str, patient_id: str, data: bytes, scrub: bool):
        return await client.post("/api/v1/studies", data={"study_id": study_id, "patient_id": patient_id,
                                                          "report": REPORT, "scrub": str(scrub).lower()},
                                 files=[("files", ("a.dcm", data, "application/dicom"))])

    try:
        mismatch = await post("API-1", "P-9", dicom_bytes(tmp_path, "API-1", "P-1"), scrub=False)
        first = await post("API-2", "P-A", dicom_bytes(tmp_path, "API-2", "MRN5", identifiable=True), True)
        assert first.status_code == 201
        conflict = await post("API-3", "P-B", dicom_bytes(tmp_path, "API-3", "mrn5", identifiable=True), True)
    finally:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
    for resp, status in ((mismatch, 422), (conflict, 409)):
        assert resp.status_code == status and resp.headers["content-type"].startswith("application/problem+json")
    assert "not the form's patient id 'P-9'" in mismatch.json()["detail"]
    assert "ingest it as 'P-A'" in conflict.json()["detail"]
    assert counts(gateway_dsn)[0] == 1
