"""Scoring a submitted prediction file against a release's holdout truth.

Pure and protocol-dispatched: the release's protocol parses and scores its own submission
format (`CurationProtocol.score_submission`). Whatever goes wrong is turned into a rejection
whose message is built only from the file and public facts (label ids, holdout study ids), never
from the truth; a scored result holds aggregate metrics only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common import protocols
from services.common.contracts import EvaluationRequested
from services.common.objectstore import sha256_hex
from services.common.protocols.kit.receipt import receipt


@dataclass(frozen=True)
class Outcome:
    status: str  # "scored" | "rejected"
    result: dict | None = None
    error: str = ""
    receipt: str = ""
    metric_version: str = ""


class Rejected(ValueError):
    """The submission cannot be scored; the message is safe to show the submitter."""


def evaluate(cmd: EvaluationRequested, release: Mapping | None, truth: Mapping[str, object],
             n_bootstrap: int = 1000) -> Outcome:
    """Score the submission, or say why not. `release` is the consensus `releases` row."""
    if release is None:
        return Outcome("rejected", error=f"no release {cmd.release_id!r}")
    if sha256_hex(cmd.predictions_csv.encode()) != cmd.submission_sha256:
        return Outcome("rejected", error="the submission changed in transit (sha256 mismatch); submit it again")
    try:
        protocol = protocols.get(release["protocol"])
    except protocols.UnknownProtocol:
        return Outcome("rejected", error=f"no scorer for protocol {release['protocol']!r}")
    try:
        result = protocol.score_submission(cmd.predictions_csv, release, truth, n_bootstrap)
    except protocols.SubmissionRejected as exc:
        return Outcome("rejected", error=str(exc))
    version = f"{release['release_id']}@{release['manifest_sha256']}"
    metric_version = result["metric_version"]
    stamp = receipt(cmd.predictions_csv.encode(), version, metric_version)
    return Outcome("scored", result={**result, "release_version": version}, receipt=stamp,
                   metric_version=metric_version)
