"""The gold-set evaluation of the offline backend, and the targets it must meet."""

import csv
from collections import Counter

import pytest

from radcurate.eval_labels import (
    DEFAULT_DATA,
    OPENI_COLUMNS,
    OPENI_STATED_CONFIDENCE,
    evaluate,
    load_openi,
    load_rows,
    main,
    openi_dir,
)
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
    assert main(["--data", str(data), "--verbose", "--openi", str(tmp_path / "absent"), "--seconds", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "macro F1" in out and "support_devices" in out and "reports per CPU-second" in out
    assert "FP cardiomegaly" in out
    assert f"Open-i real-report set not found at {tmp_path / 'absent'}: skipped" in out


GOLD_COLUMNS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
                "Hernia", "normal"]


def write_openi(folder, reports):
    """An Open-i-format folder (reports.csv + gold.csv) from (uid, findings, impression, positives)."""
    folder.mkdir()
    with (folder / "reports.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"])
        for uid, findings, impression, _ in reports:
            writer.writerow([uid, "", "", "Xray Chest PA and Lateral", "Cough, rule out pneumonia.", "None.",
                             findings, impression])
    with (folder / "gold.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", *GOLD_COLUMNS])
        for uid, _, _, positives in reports:
            writer.writerow([f"CXR{uid}", *("1" if c in positives else "0" for c in GOLD_COLUMNS)])


OPENI_SAMPLE = [
    (1, "Heart size normal. No focal consolidation, pleural effusion or pneumothorax.", "Normal chest.", {"normal"}),
    (2, "Right lower lobe pneumonia. Small right pleural effusion.", "Pneumonia.", {"Pneumonia", "Effusion"}),
    (3, "Spiculated left upper lobe mass.", "Mass, may represent pneumonia.", {"Mass"}),
    (4, "Left basilar opacity may represent atelectasis.", "No acute disease.", set()),
]


def test_open_i_rows_carry_sections_and_gold_columns_mapped_onto_taxonomy_labels(tmp_path):
    write_openi(tmp_path / "openi", OPENI_SAMPLE)
    rows = {row["uid"]: row for row in load_openi(tmp_path / "openi")}
    assert rows[2]["labels"] == ["consolidation", "pleural_effusion"]
    assert rows[3]["labels"] == ["lung_nodule_mass"]
    assert rows[1]["labels"] == [] and rows[1]["id"] == "CXR1"
    assert rows[1]["report"].startswith("INDICATION: Cough, rule out pneumonia.\nCOMPARISON: None.\nFINDINGS:")


def test_open_i_is_scored_on_stated_findings_and_the_indication_is_not_one(tmp_path):
    write_openi(tmp_path / "openi", OPENI_SAMPLE)
    result = evaluate(load_openi(tmp_path / "openi"), TAXONOMY, OPENI_COLUMNS, OPENI_STATED_CONFIDENCE)
    assert list(result["per_label"]) == list(OPENI_COLUMNS)
    # "may represent atelectasis" and "may represent pneumonia" are raised, not stated
    assert result["per_label"]["atelectasis"]["fp"] == 0
    assert result["per_label"]["consolidation"] == {**result["per_label"]["consolidation"], "tp": 1, "fp": 0}
    assert result["macro_f1"] == 1.0


def test_every_suggestion_counts_without_a_confidence_floor(tmp_path):
    write_openi(tmp_path / "openi", OPENI_SAMPLE)
    result = evaluate(load_openi(tmp_path / "openi"), TAXONOMY, OPENI_COLUMNS)
    assert result["per_label"]["atelectasis"]["fp"] == 1


def test_the_command_prints_both_open_i_halves_when_the_set_is_there(tmp_path, capsys, monkeypatch):
    write_openi(tmp_path / "openi", OPENI_SAMPLE)
    monkeypatch.setenv("RADCURATE_OPENI_DIR", str(tmp_path / "openi"))
    data = tmp_path / "gold.jsonl"
    data.write_text('{"id": "x", "report": "Cardiomegaly.", "labels": ["cardiomegaly"], "uncertain": []}\n')
    assert main(["--data", str(data), "--seconds", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "Open-i real reports, all" in out
    assert "even uids (development half)" in out and "odd uids (held-out half)" in out
    assert "throughput on real reports" in out


def test_an_open_i_folder_without_the_gold_columns_is_a_clear_error(tmp_path, capsys):
    write_openi(tmp_path / "openi", OPENI_SAMPLE)
    (tmp_path / "openi" / "gold.csv").write_text("filename,Atelectasis\nCXR1,0\n")
    data = tmp_path / "gold.jsonl"
    data.write_text('{"id": "x", "report": "Cardiomegaly.", "labels": ["cardiomegaly"], "uncertain": []}\n')
    assert main(["--data", str(data), "--openi", str(tmp_path / "openi"), "--seconds", "0.05"]) == 2
    out = capsys.readouterr().out
    assert "not in the expected format" in out and "missing column(s) Cardiomegaly" in out


def _linked_worktree(tmp_path):
    """A main checkout and a linked worktree of it laid out as git lays them out, elsewhere."""
    main_git = tmp_path / "repo" / "main" / ".git"
    (main_git / "worktrees" / "wt").mkdir(parents=True)
    (main_git / "worktrees" / "wt" / "commondir").write_text("../..\n")
    worktree = tmp_path / "trees" / "wt"
    worktree.mkdir(parents=True)
    (worktree / ".git").write_text(f"gitdir: {main_git / 'worktrees' / 'wt'}\n")
    return worktree


def test_a_git_worktree_finds_the_open_i_set_beside_its_main_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("RADCURATE_OPENI_DIR", raising=False)
    worktree = _linked_worktree(tmp_path)
    (tmp_path / "repo" / "shared" / "data").mkdir(parents=True)
    write_openi(tmp_path / "repo" / "shared" / "data" / "openi-dev", OPENI_SAMPLE)
    assert openi_dir(root=worktree) == tmp_path / "repo" / "shared" / "data" / "openi-dev"
    # one beside the worktree itself still comes first, and the environment and --openi before it
    (tmp_path / "trees" / "shared" / "data").mkdir(parents=True)
    write_openi(tmp_path / "trees" / "shared" / "data" / "openi-dev", OPENI_SAMPLE)
    assert openi_dir(root=worktree) == tmp_path / "trees" / "shared" / "data" / "openi-dev"
    monkeypatch.setenv("RADCURATE_OPENI_DIR", str(tmp_path / "env"))
    assert openi_dir(root=worktree) == tmp_path / "env"
    assert openi_dir(tmp_path / "flag", root=worktree) == tmp_path / "flag"


def test_a_plain_checkout_or_a_broken_git_file_looks_beside_the_repository_only(tmp_path, monkeypatch):
    monkeypatch.delenv("RADCURATE_OPENI_DIR", raising=False)
    plain = tmp_path / "plain"
    (plain / ".git").mkdir(parents=True)
    assert openi_dir(root=plain) == tmp_path / "shared" / "data" / "openi-dev"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ".git").write_text("not a git file\n")
    assert openi_dir(root=broken) == tmp_path / "shared" / "data" / "openi-dev"
