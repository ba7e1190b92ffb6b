"""Pairing PACS studies with their reports, keyed by accession number or StudyInstanceUID.

Each report row has the radiologist's text and at least one key, `accession_number` or
`study_instance_uid`; optionally `study_id` and `patient_id`, the names RadCurate will use. A PACS
holds the images but not these names, so without them a study is named by its StudyInstanceUID
and its patient by a pseudonym derived from the PACS's PatientID (see `pseudonym`). The rows come
from a CSV (`radcurate ingest --dicomweb`) or a JSON body (the gateway's PACS import API).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from services.common.dicomweb import StudyMatch
from services.common.identifiers import normalise_patient_id

KEYS = ("accession_number", "study_instance_uid")


class ReportsError(ValueError):
    """reports.csv cannot be used; the message says why."""


@dataclass(frozen=True)
class ReportRow:
    report: str
    accession_number: str = ""
    study_instance_uid: str = ""
    study_id: str = ""
    patient_id: str = ""


@dataclass(frozen=True)
class PairedStudy:
    """A PACS study with the report and the names it will have in RadCurate."""

    match: StudyMatch
    study_id: str
    patient_id: str
    report: str


def pseudonym(patient_id: str) -> str:
    """A stable patient name that is not the PACS's PatientID (patient-level splits need one per
    patient), the same for every spelling of it (identifiers.normalise_patient_id: " 0123" and
    "123" are one patient). A plain digest: give `patient_id` in the CSV when the IDs must not
    be guessable."""
    return "P-" + hashlib.sha256(normalise_patient_id(patient_id).encode()).hexdigest()[:16]


class ReportBook:
    """Report rows, found by StudyInstanceUID first, then by accession number."""

    def __init__(self, rows: list[ReportRow], source: str = "reports.csv",
                 row_name: Callable[[int], str] = lambda i: f"line {i + 2}") -> None:
        """`row_name` says where row i is, for messages (a CSV's line 1 is its header)."""
        self.source = source
        self.by_uid: dict[str, ReportRow] = {}
        self.by_accession: dict[str, ReportRow] = {}
        for i, row in enumerate(rows):
            if not (row.accession_number or row.study_instance_uid):
                raise ReportsError(f"{source} {row_name(i)}: neither accession_number nor study_instance_uid is set")
            for key, index in ((row.study_instance_uid, self.by_uid), (row.accession_number, self.by_accession)):
                if key and key in index:
                    raise ReportsError(f"{source} {row_name(i)}: {key!r} has more than one report")
                if key:
                    index[key] = row

    def find(self, match: StudyMatch) -> ReportRow | None:
        return self.by_uid.get(match.study_instance_uid) or (
            self.by_accession.get(match.accession_number) if match.accession_number else None)

    def pair(self, match: StudyMatch) -> PairedStudy:
        """The study with its report and names; raises ReportsError saying what is missing."""
        row = self.find(match)
        if row is None:
            accession = f", nor for its AccessionNumber {match.accession_number}" if match.accession_number else ""
            raise ReportsError(f"no report in {self.source} for its StudyInstanceUID{accession}")
        patient_id = row.patient_id or (pseudonym(match.patient_id) if match.patient_id else "")
        if not patient_id:
            raise ReportsError(f"no patient_id in {self.source} and no PatientID in the PACS")
        return PairedStudy(match, row.study_id or match.study_instance_uid, patient_id, row.report)
