"""Scoring a submission in the consensus service: aggregates and a receipt, or a truth-free refusal."""

from __future__ import annotations

import json

import numpy as np

from services.common.contracts import EvaluationRequested
from services.common.objectstore import sha256_hex
from services.common.taxonomy import load_taxonomy
from services.consensus.evaluation import evaluate

LABELS = load_taxonomy("cxr").label_ids
HOLDOUT = [f"H{i:02d}" for i in range(30)]
TRUTH = {sid: [LABELS[i % 12], LABELS[(i * 5) % 12]] if i % 3 else [] for i, sid in enumerate(HOLDOUT)}
RELEASE = {"release_id": "r1", "protocol": "cxr-label-verification", "holdout": HOLDOUT, "manifest_sha256": "ab" * 32}


def request(text: str, **kw) -> EvaluationRequested:
    return EvaluationRequested(study_id="e1", evaluation_id="e1", evaluator_id="ev", release_id="r1",
                               predictions_csv=text, submission_sha256=kw.pop("sha", sha256_hex(text.encode())))


def predictions(ids=HOLDOUT, seed=0) -> str:
    rng = np.random.default_rng(seed)
    lines = ["study_id," + ",".join(LABELS)] + [f"{s}," + ",".join(f"{p:.3f}" for p in rng.random(12)) for s in ids]
    return "\n".join(lines) + "\n"


def test_a_good_file_gets_aggregate_metrics_with_intervals_and_a_receipt():
    out = evaluate(request(predictions()), RELEASE, TRUTH, n_bootstrap=50)
    assert out.status == "scored" and len(out.receipt) == 64
    assert set(out.result["macro"]) == {"auroc", "sensitivity", "specificity", "f1"}
    assert out.result["release_version"] == f"r1@{'ab' * 32}"
    assert not any(sid in json.dumps(out.result) for sid in HOLDOUT)


def test_the_receipt_changes_with_the_submission():
    a = evaluate(request(predictions(seed=1)), RELEASE, TRUTH, n_bootstrap=0)
    b = evaluate(request(predictions(seed=2)), RELEASE, TRUTH, n_bootstrap=0)
    assert a.receipt != b.receipt


def test_missing_and_extra_studies_are_named_without_touching_the_truth():
    out = evaluate(request(predictions([*HOLDOUT[1:], "X99"])), RELEASE, TRUTH)
    assert out.status == "rejected"
    assert "missing holdout studies: 1 ('H00')" in out.error and "'X99'" in out.error
    assert out.result is None


def test_unknown_release_and_corrupted_submission_are_refused():
    assert "no release" in evaluate(request(predictions()), None, {}).error
    assert "sha256" in evaluate(request(predictions(), sha="0" * 64), RELEASE, TRUTH).error
