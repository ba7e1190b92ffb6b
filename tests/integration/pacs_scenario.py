"""`radcurate ingest --dicomweb` against a real PACS (Orthanc), run inside its own network namespace.

Not collected on its own (the name does not match test_*.py): test_pacs_ingest.py runs this file
with pytest inside `unshare -n`, where loopback is the only interface, because Orthanc 1.10 listens
on every interface. Everything it needs — Orthanc, the S3 server, Postgres, the broker and the
gateway — is started here, on that namespace's loopback. The tests run in file order, each one a
step of the same scenario.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pydicom
import pytest
from pydicom.data import get_testdata_file

from radcurate.demo import store_for
from radcurate.stack import local
from services.common.dicomweb import DicomWebClient
from services.common.objectstore import sha256_hex
from services.common.pacs_pairing import pseudonym
from tests.conftest import schema_dsn
from tests.support.orthanc import non_loopback_interfaces, start_orthanc

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
RG1 = "RG1_J2KR.dcm"  # a real CR chest PA, 1955×1841, JPEG 2000 lossless, with a patient name in it
MR = "MR_small.dcm"  # a real MR slice; reports.csv has no report for it
SYNTH_STUDIES = 3


def study_files(data_dir: Path, study_id: str) -> list[Path]:
    """A synthetic study's files: `dicom/<id>.dcm`, or every file under `dicom/<id>/` (several views)."""
    single = data_dir / "dicom" / f"{study_id}.dcm"
    files = ([single] if single.exists()
             else sorted(p for p in (data_dir / "dicom" / study_id).rglob("*") if p.is_file()))
    assert files, f"no DICOM for {study_id} in {data_dir}"
    return files


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    assert not non_loopback_interfaces(), "run this file through test_pacs_ingest.py (inside unshare -n)"
    running = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, orthanc):
    state_dir = tmp_path_factory.mktemp("stack")
    # The gateway may import only from the PACSes its operator names (the API twin of the CLI).
    allowed = {"RADCURATE_GATEWAY_DICOMWEB_URLS": json.dumps([orthanc.dicomweb_url])}
    state = local.up(state_dir, services_to_run=("gateway",), service_env=allowed)
    yield state
    local.down(state_dir)


@pytest.fixture(scope="module")
def pacs(orthanc, tmp_path_factory) -> dict:
    """Orthanc loaded over STOW-RS with synthetic CXR studies and two real files, and the
    reports.csv that goes with them (synthetic ones keyed by StudyInstanceUID, RG1 by accession)."""
    from radcurate.synth.cxr import synth_cxr

    work = tmp_path_factory.mktemp("pacs-data")
    synth_cxr(SYNTH_STUDIES, 7, work / "synth")
    with open(work / "synth" / "reports.csv", newline="") as f:
        synth_reports = {r["study_id"]: r for r in csv.DictReader(f)}
    # Per study its files, whether a study is one file or a folder of views (frontal, lateral, …).
    files = {sid: study_files(work / "synth", sid) for sid in synth_reports}
    files |= {name: [Path(get_testdata_file(name, download=False))] for name in (RG1, MR)}
    headers = {k: pydicom.dcmread(paths[0], stop_before_pixels=True) for k, paths in files.items()}
    asyncio.run(_stow(orthanc.dicomweb_url, [p.read_bytes() for paths in files.values() for p in paths]))
    rows = [{"study_instance_uid": headers[sid].StudyInstanceUID, "accession_number": "", "study_id": sid,
             "patient_id": r["patient_id"], "report": r["report"]} for sid, r in synth_reports.items()]
    rows.append({"study_instance_uid": "", "accession_number": headers[RG1].AccessionNumber, "study_id": "",
                 "patient_id": "", "report": "PA chest. Small right pleural effusion. No pneumothorax."})
    reports = work / "reports.csv"
    with open(reports, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {"files": files, "headers": headers, "reports": reports, "synth_reports": synth_reports}


async def _stow(url: str, instances: list[bytes]) -> None:
    client = DicomWebClient(url)
    try:
        await client.store_instances(instances)
    finally:
        await client.aclose()


def radcurate_ingest(stack: dict, orthanc, reports: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI as a curator runs it (not a terminal: no progress bar in the output)."""
    cmd = [sys.executable, "-m", "radcurate.cli", "ingest", "--dicomweb", orthanc.dicomweb_url,
           "--reports", str(reports), "--state-dir", stack["state_dir"], *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=REPO)


def gateway_rows(stack: dict, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(schema_dsn(stack["postgres"]["admin_dsn"], "gateway")) as conn:
        return conn.execute(sql, params).fetchall()


def study_view(stack: dict, study_id: str) -> httpx.Response:
    return httpx.get(f"{stack['gateway_url']}/api/v1/studies/{study_id}",
                     headers={"Authorization": f"Bearer {stack['admin_token']}"}, timeout=30)


def test_the_first_run_ingests_the_clean_studies_and_refuses_the_others_with_reasons(stack, orthanc, pacs):
    run = radcurate_ingest(stack, orthanc, pacs["reports"])
    assert run.returncode == 1, run.stdout + run.stderr  # not everything found went in
    assert f"{SYNTH_STUDIES + 2} studies found: ingested {SYNTH_STUDIES}, already present 0, refused 2" in run.stdout
    rg1, mr = pacs["headers"][RG1], pacs["headers"][MR]
    assert f"refused  {rg1.StudyInstanceUID}: " in run.stderr and "identifying data (" in run.stderr
    assert "PatientName" in run.stderr and "PS3.15 Basic Profile" in run.stderr
    assert f"refused  StudyInstanceUID {mr.StudyInstanceUID}: no report in {pacs['reports']}" in run.stderr
    stored = gateway_rows(stack, "SELECT study_id, patient_id, study_instance_uid, report_text FROM studies"
                                 " ORDER BY study_id")
    assert [(sid, pid, uid) for sid, pid, uid, _ in stored] == [
        (sid, r["patient_id"], pacs["headers"][sid].StudyInstanceUID)
        for sid, r in sorted(pacs["synth_reports"].items())]
    assert all(text == pacs["synth_reports"][sid]["report"] for sid, _, _, text in stored)
    for sid in pacs["synth_reports"]:
        view = study_view(stack, sid)
        assert view.status_code == 200 and view.json()["instances"] == len(pacs["files"][sid])
    # The PACS sent the instances as stored: the object store holds the very bytes that were loaded.
    keys = gateway_rows(stack, "SELECT study_id, sha256 FROM study_objects")
    assert sorted(keys) == sorted((sid, sha256_hex(p.read_bytes())) for sid in pacs["synth_reports"]
                                  for p in pacs["files"][sid])


def test_a_second_run_ingests_nothing_new_and_says_so(stack, orthanc, pacs):
    before = gateway_rows(stack, "SELECT (SELECT count(*) FROM studies), (SELECT count(*) FROM study_objects),"
                                 " (SELECT count(*) FROM outbox)")
    run = radcurate_ingest(stack, orthanc, pacs["reports"], "--quiet")
    assert run.returncode == 1, run.stdout + run.stderr
    assert (f"{SYNTH_STUDIES + 2} studies found: ingested 0, already present {SYNTH_STUDIES}, refused 2, failed 0"
            " (nothing new to ingest)") in run.stdout
    assert "  present " not in run.stdout  # --quiet lists only what needs a look
    after = gateway_rows(stack, "SELECT (SELECT count(*) FROM studies), (SELECT count(*) FROM study_objects),"
                                " (SELECT count(*) FROM outbox)")
    assert after == before


def test_a_real_jpeg2000_radiograph_goes_in_scrubbed_and_bit_exact_in_its_pixels(stack, orthanc, pacs):
    rg1 = pacs["headers"][RG1]
    run = radcurate_ingest(stack, orthanc, pacs["reports"], "--scrub", "--study-uid", rg1.StudyInstanceUID)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 studies found: ingested 1" in run.stdout and "scrubbed" in run.stdout
    [(patient_id,)] = gateway_rows(stack, "SELECT patient_id FROM studies WHERE study_id = %s", (rg1.StudyInstanceUID,))
    assert patient_id == pseudonym(rg1.PatientID) != rg1.PatientID
    [(key,)] = gateway_rows(stack, "SELECT object_key FROM study_objects WHERE study_id = %s", (rg1.StudyInstanceUID,))
    stored = pydicom.dcmread(io.BytesIO(store_for(stack).get_bytes(stack["buckets"]["objects"], key)))
    original = pydicom.dcmread(pacs["files"][RG1][0])
    assert stored.PatientName == stored.PatientID == patient_id and not stored.get("AccessionNumber")
    assert stored.PatientIdentityRemoved == "YES" and stored.StudyInstanceUID != original.StudyInstanceUID
    assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID  # not transcoded
    assert stored.PixelData == original.PixelData
    assert study_view(stack, rg1.StudyInstanceUID).json()["report_text"].startswith("PA chest.")


def test_an_unknown_study_uid_is_reported_as_failed_and_nothing_changes(stack, orthanc, pacs):
    before = gateway_rows(stack, "SELECT count(*) FROM studies")
    run = radcurate_ingest(stack, orthanc, pacs["reports"], "--study-uid", "1.2.3.4.5.6.7.8.9")
    assert run.returncode == 1
    assert "failed   StudyInstanceUID 1.2.3.4.5.6.7.8.9: not found in the PACS" in run.stderr
    assert "0 studies found: ingested 0, already present 0, refused 0, failed 1" in run.stdout
    assert gateway_rows(stack, "SELECT count(*) FROM studies") == before


def api(stack: dict, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{stack['gateway_url']}/api/v1{path}", timeout=30,
                         headers={"Authorization": f"Bearer {stack['admin_token']}"}, **kwargs)


def finished_import(stack: dict, href: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = api(stack, "GET", href.removeprefix("/api/v1")).json()
        if body["status"] != "running":
            return body
        time.sleep(0.3)
    raise AssertionError(f"import {href} still running after 120 s")


def test_curators_import_through_the_gateway_api_with_the_same_checks_and_resumption(stack, orthanc, pacs,
                                                                                      tmp_path):
    from radcurate.synth.cxr import synth_cxr

    synth_cxr(1, 8, tmp_path / "more")  # seed 8: UIDs no earlier study has
    new_files = study_files(tmp_path / "more", "CXR-000001")
    asyncio.run(_stow(orthanc.dicomweb_url, [p.read_bytes() for p in new_files]))
    header = pydicom.dcmread(new_files[0], stop_before_pixels=True)
    new_uid = header.StudyInstanceUID
    # The form's patient id must be the one the (de-identified, stored as is) files carry (issue 11
    # item 11): another patient's id is refused, and so is another spelling of an id an earlier
    # study of this patient was ingested under.
    patient_id = header.PatientID
    with open(pacs["reports"], newline="") as f:
        reports = [{k: v for k, v in r.items() if v} for r in csv.DictReader(f)]
    reports.append({"study_instance_uid": new_uid, "study_id": "API-000001", "patient_id": patient_id,
                    "report": "Heart size normal. No pleural effusion."})
    body = {"dicomweb_url": orthanc.dicomweb_url, "reports": reports}

    started = api(stack, "POST", "/pacs-imports", json=body)
    assert started.status_code == 202, started.text
    done = finished_import(stack, started.json()["href"])
    assert done["status"] == "done" and done["found"] == SYNTH_STUDIES + 3
    assert done["counts"] == {"ingested": 1, "present": SYNTH_STUDIES + 1, "refused": 1, "failed": 0}
    by_outcome = {r["outcome"]: r for r in done["results"]}
    assert by_outcome["ingested"]["study_id"] == "API-000001"
    assert by_outcome["ingested"]["instances"] == len(new_files)
    assert by_outcome["refused"]["study_instance_uid"] == pacs["headers"][MR].StudyInstanceUID
    assert "no report in reports" in by_outcome["refused"]["detail"]
    assert gateway_rows(stack, "SELECT patient_id FROM studies WHERE study_id = 'API-000001'") == [(patient_id,)]

    again = finished_import(stack, api(stack, "POST", "/pacs-imports", json=body).json()["href"])
    assert again["counts"] == {"ingested": 0, "present": SYNTH_STUDIES + 2, "refused": 1, "failed": 0}


def test_the_import_api_refuses_unlisted_pacses_and_ambiguous_reports_without_starting(stack, orthanc, pacs):
    before = gateway_rows(stack, "SELECT count(*) FROM pacs_imports")
    elsewhere = api(stack, "POST", "/pacs-imports", json={"dicomweb_url": "http://10.0.0.1/dicom-web",
                                                          "reports": [{"accession_number": "A", "report": "x"}]})
    assert elsewhere.status_code == 403 and "not one of this gateway's PACSes" in elsewhere.json()["detail"]
    twice = [{"accession_number": "A", "report": "x"}, {"accession_number": "A", "report": "y"}]
    ambiguous = api(stack, "POST", "/pacs-imports", json={"dicomweb_url": orthanc.dicomweb_url, "reports": twice})
    assert ambiguous.status_code == 422 and "reports [1]: 'A' has more than one report" in ambiguous.json()["detail"]
    assert ambiguous.headers["content-type"] == "application/problem+json"
    assert gateway_rows(stack, "SELECT count(*) FROM pacs_imports") == before
