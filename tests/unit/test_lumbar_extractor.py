"""Lumbar report grading rules, the lexicon mapper, and their accuracy on the gold reports."""

import pytest

from radcurate.lumbar.eval import DEFAULT_DATA, evaluate, gold_grid, load_rows, predict
from services.common.contracts import Certainty, Finding, Laterality
from services.common.protocols.lumbar.extract import (
    extract_lumbar_findings,
    extract_lumbar_grades,
    level_groups,
    parse_level,
)
from services.common.protocols.lumbar.grid import Grade, Level
from services.common.protocols.lumbar.mapping import (
    HEDGED_CONFIDENCE,
    SILENT_CONFIDENCE,
    STATED_CONFIDENCE,
    map_lumbar_findings,
    suggest_grades,
)
from services.common.taxonomy import load_taxonomy

TAXONOMY = load_taxonomy("lumbar")
N, M, S = Grade.NORMAL_MILD, Grade.MODERATE, Grade.SEVERE


def grid(report):
    return predict(report, TAXONOMY)


@pytest.mark.parametrize("text", ["L4-5", "L4/L5", "L4-L5", "l4/5", "L4 - L5", "L4\u20135"])
def test_level_notations_normalise_to_one_level(text):
    assert parse_level(text) is Level.L4_L5


@pytest.mark.parametrize("text", ["L5-S1", "L5/S1", "lumbosacral"])
def test_the_lumbosacral_level(text):
    assert parse_level(text) is Level.L5_S1


def test_non_adjacent_levels_are_not_a_disc_level():
    assert parse_level("L3-5") is None


def test_level_lists_and_ranges_are_grouped():
    [group] = level_groups("at L2-3 through L4-5")
    assert group.levels == (Level.L2_L3, Level.L3_L4, Level.L4_L5)
    [group] = level_groups("at L3-4 and L5-S1")
    assert group.levels == (Level.L3_L4, Level.L5_S1)


def test_a_level_header_grades_the_sentences_after_it():
    g = grid("L4-L5: Disc bulge. Moderate central canal stenosis.\nL5-S1: Normal.")
    assert g["spinal_canal_stenosis_l4_l5"] is M
    assert g["spinal_canal_stenosis_l5_s1"] is N


def test_sides_are_read_per_grade():
    g = grid("L5-S1: Severe left and moderate right neural foraminal narrowing.")
    assert g["left_neural_foraminal_narrowing_l5_s1"] is S
    assert g["right_neural_foraminal_narrowing_l5_s1"] is M


def test_bilateral_and_unsided_name_both_sides():
    for text in ("Moderate bilateral subarticular recess narrowing at L4-5.",
                 "Moderate subarticular recess narrowing at L4-5."):
        g = grid(text)
        assert g["left_subarticular_stenosis_l4_l5"] is g["right_subarticular_stenosis_l4_l5"] is M


def test_negations_grade_normal_and_name_every_listed_condition():
    mentions = extract_lumbar_grades("L1-L2: No spinal canal or neural foraminal stenosis.", TAXONOMY)
    assert {m.condition.value for m in mentions} == {
        "spinal_canal_stenosis", "left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"}
    assert all(m.grade is N and m.negated for m in mentions)


def test_no_significant_stenosis_names_all_five_conditions():
    mentions = extract_lumbar_grades("L3-4: No significant stenosis.", TAXONOMY)
    assert len(mentions) == 5 and all(m.negated for m in mentions)


def test_a_range_takes_the_upper_grade_and_is_flagged():
    [m] = extract_lumbar_grades("Mild-to-moderate central canal stenosis at L4-5.", TAXONOMY)
    assert (m.grade, m.uncertain) == (M, True)
    [m] = extract_lumbar_grades("Moderate to severe canal stenosis at L3-4.", TAXONOMY)
    assert (m.grade, m.uncertain) == (S, True)


def test_a_grade_after_the_structure_counts():
    g = grid("L4-5: The left neural foramen is severely narrowed. The central canal is patent.")
    assert g["left_neural_foraminal_narrowing_l4_l5"] is S
    assert g["right_neural_foraminal_narrowing_l4_l5"] is N
    assert g["spinal_canal_stenosis_l4_l5"] is N


def test_findings_attach_to_the_level_next_to_them():
    g = grid("Moderate canal stenosis at L3-4 and severe canal stenosis at L4-5.")
    assert (g["spinal_canal_stenosis_l3_l4"], g["spinal_canal_stenosis_l4_l5"]) == (M, S)
    g = grid("At L3-4 there is moderate canal stenosis and at L4-5 severe left foraminal narrowing.")
    assert g["spinal_canal_stenosis_l3_l4"] is M and g["left_neural_foraminal_narrowing_l4_l5"] is S


def test_the_history_section_is_not_read():
    assert all(v is N for v in grid("CLINICAL HISTORY: severe stenosis at L4-5?\nFINDINGS: Normal.").values())


def test_the_mapper_keeps_the_higher_grade_and_marks_silent_cells():
    report = "L4-5: Moderate canal stenosis.\nIMPRESSION: Severe canal stenosis at L4-5."
    cells = {s.cell_id: s for s in suggest_grades(extract_lumbar_grades(report, TAXONOMY))}
    assert len(cells) == 25
    assert cells["spinal_canal_stenosis_l4_l5"].grade is S
    assert cells["spinal_canal_stenosis_l4_l5"].confidence == STATED_CONFIDENCE
    assert cells["spinal_canal_stenosis_l1_l2"].confidence == SILENT_CONFIDENCE
    assert not cells["spinal_canal_stenosis_l1_l2"].mentioned


def test_findings_round_trip_through_the_event_contract():
    report = "L5-S1: Mild to moderate left foraminal narrowing."
    findings = extract_lumbar_findings(report, TAXONOMY)
    assert findings[0].label_hint == "left_neural_foraminal_narrowing_l5_s1"
    assert findings[0].laterality is Laterality.LEFT and findings[0].certainty is Certainty.UNCERTAIN
    suggestions, unmapped = map_lumbar_findings(findings, TAXONOMY)
    cell = {s.cell_id: s for s in suggestions}["left_neural_foraminal_narrowing_l5_s1"]
    assert (cell.grade, cell.confidence, unmapped) == (M, HEDGED_CONFIDENCE, [])


def test_free_text_findings_without_a_hint_are_graded_from_their_words():
    finding = Finding(text="severe right subarticular stenosis",
                      evidence="At L4-5 there is severe right subarticular stenosis.")
    other = Finding(text="hemangioma in L2", evidence="Incidental hemangioma.")
    suggestions, unmapped = map_lumbar_findings([finding, other], TAXONOMY)
    assert {s.cell_id: s.grade for s in suggestions}["right_subarticular_stenosis_l4_l5"] is S
    assert unmapped == [other]


def test_accuracy_on_the_hand_written_gold_reports():
    rows = load_rows(DEFAULT_DATA)
    assert len(rows) >= 60
    result = evaluate(rows, TAXONOMY)
    assert all(acc >= 0.97 for acc in result["per_condition_accuracy"].values()), result
    assert result["macro_f1"] >= 0.93
    heldout = evaluate([r for r in rows if r.get("split") == "heldout"], TAXONOMY)
    assert heldout["n_reports"] >= 15 and heldout["accuracy"] >= 0.95


def test_gold_rows_only_use_known_cells_and_grades():
    for row in load_rows(DEFAULT_DATA):
        assert set(row["grades"]) <= set(gold_grid(row))
        assert all(Grade(v) for v in row["grades"].values())
