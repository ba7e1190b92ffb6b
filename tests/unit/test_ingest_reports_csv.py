"""reports.csv as curators make it: in a spreadsheet. `radcurate ingest DIR` (bulk_ingest.read_reports)
and `radcurate ingest --dicomweb` (pacs_reports.read_report_book) read what Excel writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from radcurate import bulk_ingest
from radcurate.bulk_ingest import FolderError, ingest_dir, read_reports
from radcurate.pacs_reports import read_report_book
from services.common.dicomweb import StudyMatch

BOM = "\ufeff".encode()  # what Excel's "CSV UTF-8" writes first


def folder(tmp_path: Path, csv_bytes: bytes, studies: tuple[str, ...] = ("S-1",)) -> Path:
    (tmp_path / "dicom").mkdir()
    for sid in studies:
        (tmp_path / "dicom" / f"{sid}.dcm").write_bytes(b"not read here")
    (tmp_path / "reports.csv").write_bytes(csv_bytes)
    return tmp_path


def test_a_byte_order_mark_is_not_part_of_the_first_column_s_name(tmp_path):
    data = folder(tmp_path, BOM + b"study_id,patient_id,report\r\nS-1,P-1,Heart normal.\r\n")
    assert read_reports(data) == [{"study_id": "S-1", "patient_id": "P-1", "report": "Heart normal."}]


def test_a_pacs_reports_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "reports.csv"
    path.write_bytes(BOM + b"accession_number,report\r\nA7,Heart normal.\r\n")
    assert read_report_book(path).pair(StudyMatch("1", "A7", "M")).report == "Heart normal."


def test_a_file_that_is_not_utf8_is_refused_naming_the_file_and_the_fix(tmp_path):
    data = folder(tmp_path, "study_id,patient_id,report\nS-1,P-1,Nodule at 45\u00b0.\n".encode("cp1252"))
    with pytest.raises(FolderError, match=r"reports\.csv: not UTF-8 text \(byte 0xb0.*save it as CSV UTF-8"):
        read_reports(data)


def test_separator_only_rows_are_skipped_and_ids_lose_their_blanks(tmp_path):
    data = folder(tmp_path, b"study_id,patient_id,report\n S-1 , P-1 ,text\n,,\n , ,\n")
    assert read_reports(data) == [{"study_id": "S-1", "patient_id": "P-1", "report": "text"}]


async def test_a_row_without_a_study_id_is_refused_and_never_sends_the_whole_dicom_folder(tmp_path, monkeypatch):
    # dicom/<study_id>/ with an empty id is dicom/ itself: every file of every study, as one study
    data = folder(tmp_path, b"study_id,patient_id,report\nS-1,P-1,text\n,P-2,a report without its id\n",
                  studies=("S-1", "S-2", "S-3"))
    sent: list[tuple[str, list[str]]] = []

    async def post_batch(api, batch, **_):  # type: ignore[no-untyped-def]
        sent.extend((row["study_id"], [name for name, _ in paths]) for row, paths in batch)
        return [{"study_id": row["study_id"], "status": "ingested"} for row, _ in batch]

    monkeypatch.setattr(bulk_ingest, "_post_batch", post_batch)
    summary = await ingest_dir(data, api=None)  # type: ignore[arg-type]
    assert sent == [("S-1", ["S-1.dcm"])]
    assert (summary.ingested, summary.rejected) == (1, [("", "a row has an empty study_id")])


async def test_a_short_row_is_refused_for_what_it_lacks(tmp_path, monkeypatch):
    data = folder(tmp_path, b"study_id,patient_id,report\nS-1,P-1\n")

    async def post_batch(api, batch, **_):  # type: ignore[no-untyped-def]
        raise AssertionError("nothing is sent")

    monkeypatch.setattr(bulk_ingest, "_post_batch", post_batch)
    summary = await ingest_dir(data, api=None)  # type: ignore[arg-type]
    assert summary.rejected == [("S-1", "S-1: the report text is empty")]
