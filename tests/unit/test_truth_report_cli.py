"""`radcurate report --truth`: bad inputs end in a clear message and exit 1, touching nothing."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from radcurate.cli import app


def test_a_lumbar_truth_file_is_refused_with_a_reason(tmp_path):
    truth = tmp_path / "truth.jsonl"
    truth.write_text(json.dumps({"study_id": "s1", "grades": {}, "points": {}}) + "\n")
    result = CliRunner().invoke(app, ["report", "--truth", str(truth), "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 1 and "CXR labels only" in result.output


def test_without_a_running_stack_the_audit_says_so(tmp_path):
    truth = tmp_path / "truth.jsonl"
    truth.write_text(json.dumps({"study_id": "s1", "labels": ["cardiomegaly"], "subtle": []}) + "\n")
    result = CliRunner().invoke(app, ["report", "--truth", str(truth), "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 1 and result.output.startswith("error:")
    assert not (tmp_path / "none").exists()
