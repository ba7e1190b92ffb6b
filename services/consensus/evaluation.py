"""Scoring a submitted prediction file against a release's holdout truth.

Pure and protocol-dispatched: `SCORERS` maps a protocol to the function that parses and scores
its submission format. Whatever goes wrong is turned into a rejection whose message is built
only from the file and public facts (label ids, holdout study ids), never from the truth; a
scored result holds aggregate metrics only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from services.common.contracts import EvaluationRequested, Protocol
from services.common.objectstore import sha256_hex
from services.common.taxonomy import load_taxonomy
from services.consensus import scoring_cxr, scoring_lumbar

LUMBAR_METRIC_VERSION = "lumbar-rsna2024/1"


@dataclass(frozen=True)
class Outcome:
    status: str  # "scored" | "rejected"
    result: dict | None = None
    error: str = ""
    receipt: str = ""
    metric_version: str = ""


class Rejected(ValueError):
    """The submission cannot be scored; the message is safe to show the submitter."""


def score_cxr_submission(text: str, release: Mapping, truth: Mapping[str, object], n_bootstrap: int) -> dict:
    """Holdout truth rows are label lists; predictions are `study_id,<label id>...` probabilities."""
    label_ids = load_taxonomy("cxr").label_ids
    try:
        preds = scoring_cxr.parse_predictions(text, label_ids, release["holdout"])
    except scoring_cxr.PredictionFileError as exc:
        raise Rejected(str(exc)) from None
    truth_sets = {sid: frozenset(labels) for sid, labels in truth.items()}
    return scoring_cxr.score_cxr(truth_sets, preds, label_ids, n_bootstrap=n_bootstrap, seed=0,
                                 patients=release.get("holdout_patients"))


def score_lumbar_submission(text: str, release: Mapping, truth: Mapping[str, object], n_bootstrap: int) -> dict:
    """Lumbar holdout truth rows are `{"<condition>_<level>": "<grade>"}` per study (ungraded rows
    absent); submissions use the competition's `row_id,normal_mild,moderate,severe` format."""
    grades = {f"{sid}_{col}": scoring_lumbar.Grade(g) for sid, cols in truth.items() for col, g in dict(cols).items()}
    try:
        submission = scoring_lumbar.parse_submission(text)
        result = scoring_lumbar.score_lumbar(grades, submission)
    except scoring_lumbar.SubmissionError as exc:
        raise Rejected(str(exc)) from None
    return {"metric_version": LUMBAR_METRIC_VERSION, **result}


Scorer = Callable[[str, Mapping, Mapping[str, object], int], dict]
SCORERS: dict[str, Scorer] = {Protocol.CXR.value: score_cxr_submission,
                              Protocol.LUMBAR.value: score_lumbar_submission}


def evaluate(cmd: EvaluationRequested, release: Mapping | None, truth: Mapping[str, object],
             n_bootstrap: int = 1000) -> Outcome:
    """Score the submission, or say why not. `release` is the consensus `releases` row."""
    if release is None:
        return Outcome("rejected", error=f"no release {cmd.release_id!r}")
    if sha256_hex(cmd.predictions_csv.encode()) != cmd.submission_sha256:
        return Outcome("rejected", error="the submission changed in transit (sha256 mismatch); submit it again")
    scorer = SCORERS.get(release["protocol"])
    if scorer is None:
        return Outcome("rejected", error=f"no scorer for protocol {release['protocol']!r}")
    try:
        result = scorer(cmd.predictions_csv, release, truth, n_bootstrap)
    except Rejected as exc:
        return Outcome("rejected", error=str(exc))
    version = f"{release['release_id']}@{release['manifest_sha256']}"
    metric_version = result["metric_version"]
    stamp = scoring_cxr.receipt(cmd.predictions_csv.encode(), version, metric_version)
    return Outcome("scored", result={**result, "release_version": version}, receipt=stamp,
                   metric_version=metric_version)
