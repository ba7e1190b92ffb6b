"""PACS ingest, the pure parts: DICOMweb multipart and JSON, pairing studies with reports, usage errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from radcurate.cli import app
from radcurate.pacs_ingest import parse_query
from radcurate.pacs_reports import read_report_book
from services.common.dicomweb import (
    DicomWebError,
    StudyMatch,
    attribute,
    build_multipart_related,
    parse_multipart_related,
)
from services.common.pacs_pairing import ReportBook, ReportRow, ReportsError, pseudonym

runner = CliRunner()


def test_multipart_related_round_trips_binary_parts_byte_for_byte():
    # Parts holding CRLFs, dashes and what looks like a delimiter must come back unchanged.
    parts = [b"DICM\r\n\r\n--\x00\xff", b"", b"\r\n--not-the-boundary\r\n" * 3]
    content_type, body = build_multipart_related(parts, boundary="b0undary")
    assert 'type="application/dicom"' in content_type
    assert parse_multipart_related(content_type, body) == parts


def test_a_multipart_answer_without_a_boundary_is_an_error():
    with pytest.raises(DicomWebError, match="without a boundary"):
        parse_multipart_related('multipart/related; type="application/dicom"', b"--x\r\n\r\nabc\r\n--x--")


def test_dicom_json_attributes_are_read_by_keyword():
    item = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "00080050": {"vr": "SH"},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}}
    assert attribute(item, "StudyInstanceUID") == "1.2.3"
    assert attribute(item, "AccessionNumber") == ""  # present without a value
    assert attribute(item, "PatientID") == ""  # absent


def book(*rows: ReportRow) -> ReportBook:
    return ReportBook(list(rows), "reports.csv")


def test_a_study_pairs_by_uid_first_then_by_accession_number():
    by_uid = ReportRow("uid report", study_instance_uid="1.2.3", study_id="S-1", patient_id="P-1")
    by_acc = ReportRow("accession report", accession_number="A7")
    reports = book(by_uid, by_acc)
    assert reports.pair(StudyMatch("1.2.3", "A7", "MRN1")).report == "uid report"
    paired = reports.pair(StudyMatch("9.9", "A7", "MRN1"))
    # Without names in the CSV: the study is its StudyInstanceUID, the patient a pseudonym, never the MRN.
    assert (paired.study_id, paired.patient_id) == ("9.9", pseudonym("MRN1"))
    assert "MRN1" not in paired.patient_id and pseudonym("MRN1") == pseudonym("MRN1") != pseudonym("MRN2")


def test_a_study_without_a_report_is_refused_naming_its_keys():
    with pytest.raises(ReportsError,
                       match="no report in reports.csv for its StudyInstanceUID, nor for its AccessionNumber A9"):
        book(ReportRow("r", accession_number="A7")).pair(StudyMatch("4.5", "A9"))


def test_a_study_with_no_patient_anywhere_is_refused():
    with pytest.raises(ReportsError, match="no patient_id"):
        book(ReportRow("r", study_instance_uid="4.5")).pair(StudyMatch("4.5"))


def test_two_reports_for_one_key_are_refused_as_ambiguous():
    with pytest.raises(ReportsError, match="line 3: 'A7' has more than one report"):
        book(ReportRow("r1", accession_number="A7"), ReportRow("r2", accession_number="A7"))


def test_reports_csv_needs_a_report_and_a_key_column(tmp_path):
    path = tmp_path / "reports.csv"
    path.write_text("study_id,report\nS-1,text\n")
    with pytest.raises(ReportsError, match="accession_number or study_instance_uid"):
        read_report_book(path)
    path.write_text('accession_number,report\nA7,"multi\nline"\n')
    assert read_report_book(path).pair(StudyMatch("1", "A7", "M")).report == "multi\nline"


def test_query_pairs_must_be_key_equals_value():
    assert parse_query(["ModalitiesInStudy=CR", "StudyDate=20240101-20241231"]) == {
        "ModalitiesInStudy": "CR", "StudyDate": "20240101-20241231"}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_query(["ModalitiesInStudy"])


def test_dicomweb_ingest_needs_reports_and_no_folder(tmp_path):
    result = runner.invoke(app, ["ingest", "--dicomweb", "http://127.0.0.1:9/dicom-web"])
    assert result.exit_code == 2 and "needs --reports" in result.output
    (tmp_path / "d").mkdir()
    (tmp_path / "r.csv").write_text("accession_number,report\nA,x\n")
    result = runner.invoke(app, ["ingest", str(tmp_path / "d"), "--dicomweb", "http://x", "--reports",
                                 str(tmp_path / "r.csv")])
    assert result.exit_code == 2 and "takes no folder" in result.output


def test_a_bad_query_or_reports_file_stops_before_anything_is_contacted(tmp_path):
    reports = tmp_path / "r.csv"
    reports.write_text("patient,report\nP,x\n")
    base = ["ingest", "--dicomweb", "http://127.0.0.1:9/dicom-web", "--reports", str(reports),
            "--state-dir", str(tmp_path / "nostack")]
    result = runner.invoke(app, [*base, "--query", "Modality"])
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.output
    result = runner.invoke(app, base)
    assert result.exit_code == 2 and "needs a report column and accession_number" in result.output
    reports.write_text("accession_number,report\nA,x\n")
    result = runner.invoke(app, base)
    assert result.exit_code == 1 and "radcurate up" in result.output


def test_ingest_with_neither_folder_nor_pacs_says_what_to_give():
    result = runner.invoke(app, ["ingest"])
    assert result.exit_code == 2 and "--dicomweb" in result.output


# --- the import loop, with a fake PACS and a fake sink (its adapters are tested against Orthanc) ---

class FakePacs:
    def __init__(self, studies: dict[str, list[bytes]], broken: set[str] = frozenset()) -> None:
        self.studies, self.broken, self.retrieved = studies, broken, []

    async def search_studies(self, query):
        uids = [query["StudyInstanceUID"]] if "StudyInstanceUID" in query else list(self.studies)
        return [StudyMatch(u, f"ACC-{u}", f"MRN-{u}") for u in uids if u in self.studies]

    async def search_instances(self, uid):
        from services.common.dicomweb import InstanceRef
        return [InstanceRef(f"{uid}.1", f"{uid}.1.{n}") for n in range(len(self.studies[uid]))]

    async def retrieve_instance(self, uid, ref):
        if uid in self.broken:
            raise DicomWebError(f"WADO-RS {uid}: HTTP 500")
        self.retrieved.append(ref.sop_instance_uid)
        return self.studies[uid][int(ref.sop_instance_uid.rsplit(".", 1)[1])]


class FakeSink:
    def __init__(self, present: set[str] = frozenset(), refuse: set[str] = frozenset()) -> None:
        self.have, self.refuse, self.got = set(present), refuse, {}

    async def present(self, study_id):
        return study_id in self.have

    async def ingest(self, paired, files, request):
        from services.common.pacs_import import Ingested, Refused
        if paired.study_id in self.refuse:
            raise Refused("x.dcm: carries identifying data (PatientName)")
        self.got[paired.study_id] = [f.read_bytes() for f in files]
        self.have.add(paired.study_id)
        return Ingested(len(files))


async def run_import(pacs, sink, uids=()):
    from services.common.pacs_import import ImportRequest, import_studies
    reports = book(*(ReportRow(f"report {u}", study_instance_uid=u, study_id=f"S-{u}", patient_id="P")
                     for u in ("1", "2", "3", "4")))
    return await import_studies(ImportRequest("http://pacs", study_uids=uids), reports, sink, pacs=pacs)


async def test_each_study_gets_one_outcome_and_only_missing_studies_are_retrieved():
    from services.common.pacs_import import Outcome
    pacs = FakePacs({"1": [b"a", b"b"], "2": [b"c"], "3": [b"d"], "4": [b"e"], "5": [b"f"]}, broken={"4"})
    sink = FakeSink(present={"S-2"}, refuse={"S-3"})
    summary = await run_import(pacs, sink)
    outcomes = {r.study_instance_uid: r.outcome for r in summary.results}
    assert outcomes == {"1": Outcome.INGESTED, "2": Outcome.PRESENT, "3": Outcome.REFUSED, "4": Outcome.FAILED,
                        "5": Outcome.REFUSED}
    assert sink.got == {"S-1": [b"a", b"b"]}  # every instance, in order, bytes as the PACS sent them
    assert "2.1.0" not in pacs.retrieved  # a present study is not fetched
    details = {r.study_instance_uid: r.detail for r in summary.results}
    assert "identifying data" in details["3"] and "HTTP 500" in details["4"] and "no report" in details["5"]
    assert not summary.complete

    again = await run_import(pacs, sink)
    assert again.count(Outcome.INGESTED) == 0 and again.count(Outcome.PRESENT) == 2


async def test_a_named_study_the_pacs_lacks_is_reported_as_failed():
    from services.common.pacs_import import Outcome
    summary = await run_import(FakePacs({"1": [b"a"]}), FakeSink(), uids=("1", "9.9"))
    assert summary.found == 1
    assert [(r.study_instance_uid, r.outcome, r.detail) for r in summary.results if r.outcome is Outcome.FAILED] == [
        ("9.9", Outcome.FAILED, "not found in the PACS")]
