"""What an identifier that ends up in a URL, an object key or a file name may look like.

A study id is chosen by whoever ingests the study and later becomes part of S3 keys
(`images/<study_id>/...`) and of the files `radcurate export` writes; DICOM UIDs come from the
uploaded files themselves. Neither may carry a path separator or a `..`, so both are checked
where they enter (ingest), and paths are checked again where files are written (export).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

STUDY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# DICOM PS3.5 9.1: components of digits separated by '.', at most 64 characters.
DICOM_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_study_id(value: str) -> bool:
    """Letters, digits, '.', '_' and '-', starting with a letter or digit, at most 128 characters."""
    return bool(STUDY_ID.fullmatch(value)) and ".." not in value


def is_dicom_uid(value: str) -> bool:
    return len(value) <= 64 and bool(DICOM_UID.fullmatch(value))


def normalise_patient_id(value: str) -> str:
    """A patient id as compared at ingest, so that spellings of one id that real exports produce
    compare equal: Unicode compatibility forms folded (NFKC: full-width digits from some RIS
    exports), case folded, all whitespace removed (DICOM pads LO values with spaces; CSVs carry
    stray blanks), and leading zeros dropped from an all-digit id (a spreadsheet turns
    "0012345" into "12345"). Letters and punctuation are otherwise kept: "PT-1" and "PT1" differ.
    Erring towards "the same patient" is the safe side: it can refuse an ingest, never split a
    patient across a release's holdout boundary."""
    text = "".join(unicodedata.normalize("NFKC", value).split()).casefold()
    if text.isascii() and text.isdigit():
        text = text.lstrip("0") or "0"
    return text


def patient_key(value: str, secret: str) -> str | None:
    """A keyed digest of the normalised patient id (None when it is empty): what is stored to
    recognise one patient across studies without storing the DICOM's PatientID, which before
    de-identification is the hospital's record number. Keyed with the project's
    de-identification secret, so the digest cannot be reversed by hashing every number."""
    normal = normalise_patient_id(value)
    if not normal:
        return None
    return hmac.new(secret.encode(), b"radcurate-patient\0" + normal.encode(), hashlib.sha256).hexdigest()
