"""The lumbar taxonomy file: the competition's 5 conditions x 5 levels x 3 grades."""

from services.common.protocols.lumbar.grid import CONDITIONS, LEVELS, Grade, Group
from services.common.taxonomy import load_taxonomy


def test_it_loads_by_name_with_its_version_and_protocol():
    taxonomy = load_taxonomy("lumbar")
    assert (taxonomy.version, taxonomy.protocol) == ("lumbar-v1", "lumbar-grading")
    assert load_taxonomy("lumbar") is taxonomy


def test_labels_are_the_scoring_conditions_in_column_order():
    assert load_taxonomy("lumbar").label_ids == tuple(c.value for c in CONDITIONS)


def test_levels_and_grades_are_the_competition_values():
    extra = load_taxonomy("lumbar").extra
    assert [lv["id"] for lv in extra["levels"]] == [lv.value for lv in LEVELS]
    assert [lv["name"] for lv in extra["levels"]] == ["L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"]
    assert [Grade(g["id"]) for g in extra["grades"]] == list(Grade)
    assert all(g["phrases"] for g in extra["grades"])


def test_every_label_has_a_group_a_side_and_phrases():
    for label in load_taxonomy("lumbar").labels:
        assert label.definition and label.synonyms
        assert label.extra["group"] in {g.value for g in Group}
        assert label.extra["side"] == ("none" if label.id.startswith("spinal") else label.id.split("_")[0])


def test_negations_are_strings_not_yaml_booleans():
    assert all(isinstance(n, str) for n in load_taxonomy("lumbar").extra["negations"])


def test_condition_phrases_match_report_wording_but_not_look_alikes():
    taxonomy = load_taxonomy("lumbar")
    foraminal = taxonomy.get("left_neural_foraminal_narrowing")
    assert foraminal.mentions("severe neural foraminal narrowing")
    assert not foraminal.mentions("the foramen magnum is normal")
    assert taxonomy.get("left_subarticular_stenosis").mentions("lateral recess stenosis")
