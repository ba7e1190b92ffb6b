"""Evaluation receipts: a digest binding a submission to the release and metric that scored it
(the same for every protocol, so a receipt is checkable without knowing which one)."""

from __future__ import annotations

import hashlib

RECEIPT_TAG = b"radcurate-cxr-receipt/1"  # the tag receipts have always carried; changing it breaks old receipts


def receipt(submission_bytes: bytes, release_version: str, metric_version: str) -> str:
    """SHA-256 hex binding a submission to the release and metric it was scored under.

    Each part is hashed with an 8-byte big-endian length prefix after the tag
    `RECEIPT_TAG`, so shifting bytes between parts always changes the digest.
    """
    digest = hashlib.sha256()
    parts = (RECEIPT_TAG, submission_bytes, release_version.encode(), metric_version.encode())
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()
