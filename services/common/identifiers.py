"""What an identifier that ends up in a URL, an object key or a file name may look like.

A study id is chosen by whoever ingests the study and later becomes part of S3 keys
(`images/<study_id>/...`) and of the files `radcurate export` writes; DICOM UIDs come from the
uploaded files themselves. Neither may carry a path separator or a `..`, so both are checked
where they enter (ingest), and paths are checked again where files are written (export).
"""

from __future__ import annotations

import re

STUDY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# DICOM PS3.5 9.1: components of digits separated by '.', at most 64 characters.
DICOM_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_study_id(value: str) -> bool:
    """Letters, digits, '.', '_' and '-', starting with a letter or digit, at most 128 characters."""
    return bool(STUDY_ID.fullmatch(value)) and ".." not in value


def is_dicom_uid(value: str) -> bool:
    return len(value) <= 64 and bool(DICOM_UID.fullmatch(value))
