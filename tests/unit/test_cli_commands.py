"""The command line: clear messages and exit codes, no stack needed for these commands."""

from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from radcurate.cli import app

runner = CliRunner()


def test_a_competition_layout_dataset_becomes_ingest_input(tmp_path):
    assert runner.invoke(app, ["synth", "--protocol", "lumbar", "--layout", "competition", "--studies", "2",
                               "--out", str(tmp_path / "comp")]).exit_code == 0
    result = runner.invoke(app, ["import-lumbar", str(tmp_path / "comp"), str(tmp_path / "in")])
    assert result.exit_code == 0, result.output
    assert "imported 2 studies" in result.output
    with open(tmp_path / "in" / "reports.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all("L4/L5" in r["report"] for r in rows)
    assert any((tmp_path / "in" / "dicom").rglob("*.dcm"))


def test_an_unknown_protocol_is_refused_with_exit_code_2(tmp_path):
    result = runner.invoke(app, ["synth", "--protocol", "knee", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown protocol 'knee'" in result.output


def test_ingest_without_a_running_stack_says_how_to_start_one(tmp_path):
    (tmp_path / "data").mkdir()
    result = runner.invoke(app, ["ingest", str(tmp_path / "data"), "--state-dir", str(tmp_path / "nostack")])
    assert result.exit_code == 1
    assert "radcurate up" in result.output


def test_label_reads_a_spreadsheet_saved_file_and_names_its_bad_line_with_exit_code_1(tmp_path):
    # As a curator's editor saves it: a UTF-8 byte-order mark, CRLF lines, one line in cp1252.
    source, out = tmp_path / "reports.jsonl", tmp_path / "labels.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join([
        b'{"id": "s1", "report": "Heart: mildly enlarged."}',
        '{"id": "s2", "report": "Effusion \u00b1 atelectasis."}'.encode("cp1252"),
        b'{"id": "s3", "report": "Pneumothorax? No."}']) + b"\r\n")
    result = runner.invoke(app, ["label", "--in", str(source), "--out", str(out)])
    assert result.exit_code == 1
    assert "labelled 2 report(s)" in result.output
    assert "line 2: not UTF-8 text (byte 0xb1); save the file as UTF-8" in result.output
    labelled = [json.loads(line) for line in out.read_text().splitlines()]
    # the typed template's field and the checklist's answer read as a radiologist means them
    assert [(r["id"], r["labels"], r["uncertain"]) for r in labelled] == [("s1", ["cardiomegaly"], []),
                                                                          ("s3", [], [])]
