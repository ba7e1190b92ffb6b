"""`radcurate label`: label a JSONL file of reports, skipping and reporting bad lines."""

import json

import pytest

from radcurate.label_file import LabelSummary, label_file


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def read_records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_report_becomes_one_labelled_record(tmp_path):
    source = write_lines(
        tmp_path / "reports.jsonl",
        [
            json.dumps({"id": "s1", "report": "Small left effusion. Possible RLL pneumonia."}),
            json.dumps({"id": "s2", "report": "No acute cardiopulmonary process."}),
        ],
    )
    summary = label_file(source, tmp_path / "labels.jsonl")
    assert summary == LabelSummary(labelled=2, errors=[])
    first, second = read_records(tmp_path / "labels.jsonl")
    assert first["id"] == "s1"
    assert first["labels"] == ["consolidation", "pleural_effusion"]
    assert first["uncertain"] == ["consolidation"]
    assert first["backend"] == "rules"
    assert first["taxonomy_version"] == "cxr-v1"
    assert {f["label_hint"] for f in first["findings"]} == {"consolidation", "pleural_effusion"}
    assert first["findings"][0]["laterality"] == "left"
    assert (second["labels"], second["findings"]) == ([], [])


def test_bad_lines_are_reported_by_number_and_the_rest_are_labelled(tmp_path):
    source = write_lines(
        tmp_path / "reports.jsonl",
        [
            json.dumps({"id": "ok-1", "report": "Cardiomegaly."}),
            "{not json",
            json.dumps({"report": "Right pneumothorax."}),
            json.dumps({"id": "empty", "report": "   "}),
            "",
            json.dumps(["a", "list"]),
            json.dumps({"id": "ok-2", "report": "ETT 4 cm above the carina."}),
        ],
    )
    summary = label_file(source, tmp_path / "out" / "labels.jsonl")
    assert summary.labelled == 2
    assert [e.split(":")[0] for e in summary.errors] == ["line 2", "line 3", "line 4", "line 6"]
    assert "invalid JSON" in summary.errors[0]
    assert summary.errors[1] == "line 3: missing id"
    assert summary.errors[2] == "line 4: empty report"
    assert [r["id"] for r in read_records(tmp_path / "out" / "labels.jsonl")] == ["ok-1", "ok-2"]


def test_the_llm_backend_without_an_endpoint_or_key_says_what_to_set(tmp_path, monkeypatch):
    for var in ("RADCURATE_EXTRACTOR_LLM_API_KEY", "RADCURATE_EXTRACTOR_LLM_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    source = write_lines(tmp_path / "r.jsonl", [json.dumps({"id": "a", "report": "Cardiomegaly."})])
    with pytest.raises(ValueError, match="llm_api_key"):
        label_file(source, tmp_path / "o.jsonl", backend="llm")
    assert not (tmp_path / "o.jsonl").exists() or (tmp_path / "o.jsonl").read_text() == ""


def test_an_unknown_backend_is_a_value_error(tmp_path):
    source = write_lines(tmp_path / "r.jsonl", [json.dumps({"id": "a", "report": "Cardiomegaly."})])
    with pytest.raises(ValueError, match="unknown backend 'gpt'"):
        label_file(source, tmp_path / "o.jsonl", backend="gpt")


def test_a_file_saved_with_a_byte_order_mark_keeps_its_first_report(tmp_path):
    # Notepad's and Excel's "UTF-8" start the file with a BOM; the first report used to be a bad line
    source = tmp_path / "reports.jsonl"
    lines = [json.dumps({"id": "s1", "report": "Cardiomegaly."}), json.dumps({"id": "s2", "report": "No effusion."})]
    source.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    summary = label_file(source, tmp_path / "labels.jsonl")
    assert summary == LabelSummary(labelled=2, errors=[])
    assert [r["id"] for r in read_records(tmp_path / "labels.jsonl")] == ["s1", "s2"]


def test_a_line_that_is_not_utf8_is_a_bad_line_and_the_rest_are_labelled(tmp_path):
    source = tmp_path / "reports.jsonl"
    legacy = json.dumps({"id": "cp1252", "report": "Effusion \u00b1 atelectasis."}, ensure_ascii=False)
    source.write_bytes(
        json.dumps({"id": "ok-1", "report": "Cardiomegaly."}).encode() + b"\n"
        + legacy.encode("cp1252") + b"\n"
        + json.dumps({"id": "ok-2", "report": "Right pneumothorax."}).encode() + b"\n"
    )
    summary = label_file(source, tmp_path / "labels.jsonl")
    assert summary.errors == ["line 2: not UTF-8 text (byte 0xb1); save the file as UTF-8"]
    assert [r["id"] for r in read_records(tmp_path / "labels.jsonl")] == ["ok-1", "ok-2"]
