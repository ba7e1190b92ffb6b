"""reports.csv for `radcurate ingest --dicomweb`: columns `report`, `accession_number` and/or
`study_instance_uid`, optionally `study_id` and `patient_id` (see services/common/pacs_pairing.py)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from services.common.pacs_pairing import KEYS, ReportBook, ReportRow, ReportsError

csv.field_size_limit(sys.maxsize)


def read_report_book(path: Path) -> ReportBook:
    """Read and check reports.csv; raises ReportsError naming the file and the problem."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # Excel's "CSV UTF-8" starts with a BOM
            reader = csv.DictReader(f)
            columns = set(reader.fieldnames or [])
            if "report" not in columns or not columns & set(KEYS):
                raise ReportsError(f"{path}: needs a report column and accession_number or study_instance_uid"
                                   f" (has: {', '.join(sorted(columns)) or 'no header'})")
            rows = [ReportRow(**{k: (raw.get(k) or "").strip() for k in
                                 ("accession_number", "study_instance_uid", "study_id", "patient_id")},
                              report=raw.get("report") or "") for raw in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReportsError(f"{path}: {exc}") from exc
    return ReportBook(rows, str(path))
