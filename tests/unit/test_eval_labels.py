"""The gold-set evaluation of the offline backend, and the targets it must meet."""

from collections import Counter

import pytest

from radcurate.eval_labels import DEFAULT_DATA, evaluate, load_rows, main
from services.common.taxonomy import load_taxonomy

TAXONOMY = load_taxonomy()


@pytest.fixture(scope="module")
def gold():
    return load_rows(DEFAULT_DATA)


@pytest.fixture(scope="module")
def result(gold):
    return evaluate(gold, TAXONOMY)


def test_the_gold_set_has_at_least_220_reports_with_unique_ids(gold):
    assert len(gold) >= 220
    assert len({row["id"] for row in gold}) == len(gold)


def test_every_label_has_at_least_15_positive_gold_reports(gold):
    support = Counter(label for row in gold for label in row["labels"])
    assert {label_id: support[label_id] for label_id in TAXONOMY.label_ids if support[label_id] < 15} == {}


def test_gold_labels_are_taxonomy_ids_and_uncertain_ones_are_also_labels(gold):
    for row in gold:
        assert set(row["labels"]) <= set(TAXONOMY.label_ids), row["id"]
        assert set(row["uncertain"]) <= set(row["labels"]), row["id"]


def test_the_offline_backend_reaches_a_macro_f1_of_0_90(result):
    assert result["macro_f1"] >= 0.90


def test_every_label_reaches_an_f1_of_0_80(result):
    weak = {label_id: round(s["f1"], 3) for label_id, s in result["per_label"].items() if s["f1"] < 0.80}
    assert weak == {}


def test_evaluate_counts_hits_false_alarms_and_misses():
    rows = [
        {"id": "a", "report": "Small left effusion.", "labels": ["pleural_effusion"], "uncertain": []},
        {"id": "b", "report": "Right pneumothorax.", "labels": ["cardiomegaly"], "uncertain": []},
    ]
    result = evaluate(rows, TAXONOMY)
    assert result["per_label"]["pleural_effusion"]["f1"] == 1.0
    assert result["per_label"]["pneumothorax"]["fp"] == 1
    assert result["per_label"]["cardiomegaly"]["fn"] == 1
    assert {(m["id"], m["kind"]) for m in result["misses"]} == {("b", "fp"), ("b", "fn")}


def test_the_command_prints_the_table_and_the_misses(tmp_path, capsys):
    data = tmp_path / "gold.jsonl"
    data.write_text('{"id": "x", "report": "Cardiomegaly.", "labels": [], "uncertain": []}\n')
    assert main(["--data", str(data), "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "macro F1" in out and "support_devices" in out and "reports per CPU-second" in out
    assert "FP cardiomegaly" in out
