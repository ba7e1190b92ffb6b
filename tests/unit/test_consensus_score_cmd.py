"""`radcurate score`: the holdout metric as a command; malformed files exit 2 with the reason."""

from __future__ import annotations

import json

import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from radcurate.cli import app

TRUTH = "study_id,a,b\nS1,1,0\nS2,0,1\nS3,1,1\nS4,0,0\nS5,0,1\n"
PRED = "study_id,a,b\nS1,0.9,0.1\nS2,0.2,0.8\nS3,0.6,0.4\nS4,0.1,0.3\nS5,0.7,0.2\n"


def run(tmp_path, pred: str, truth: str = TRUTH, *extra: str):
    (tmp_path / "t.csv").write_text(truth)
    (tmp_path / "p.csv").write_text(pred)
    return CliRunner().invoke(app, ["score", "--protocol", "cxr", "--truth", str(tmp_path / "t.csv"),
                                    "--pred", str(tmp_path / "p.csv"), *extra])


def test_prints_per_label_and_macro_metrics_equal_to_sklearn(tmp_path):
    result = run(tmp_path, PRED)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"per_label", "macro"}
    assert out["per_label"]["a"]["auroc"] == pytest.approx(roc_auc_score([1, 0, 1, 0, 0], [.9, .2, .6, .1, .7]))
    assert set(out["per_label"]["b"]) == {"auroc", "sensitivity", "specificity", "f1"}


def test_bootstrap_adds_intervals(tmp_path):
    out = json.loads(run(tmp_path, PRED, TRUTH, "--bootstrap", "100").stdout)
    low, high = out["ci95"]["macro"]["auroc"]
    assert low <= high


@pytest.mark.parametrize(("pred", "message"), [
    (PRED.replace("S5,0.7", "S5,nan"), "NaN"),
    (PRED.replace("S5,0.7", "S5,1.7"), "outside [0, 1]"),
    (PRED.replace("S5,", "S9,"), "missing holdout studies: 1 ('S5')"),
    (PRED + "S6,0.1,0.1\n", "not in the holdout set: 1 ('S6')"),
    (PRED.replace("study_id,a,b", "study_id,a,c"), "missing columns: 1 ('b')"),
])
def test_a_malformed_prediction_file_exits_2_naming_the_problem(tmp_path, pred, message):
    result = run(tmp_path, pred)
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_malformed_truth_file_exits_2(tmp_path):
    assert run(tmp_path, PRED, "id,a\nS1,1\n").exit_code == 2
