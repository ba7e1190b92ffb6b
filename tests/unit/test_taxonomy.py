"""The versioned taxonomy: the 12 default CXR labels and how their phrases are read."""

import pytest

from services.common.contracts import Protocol
from services.common.taxonomy import load_taxonomy, parse_taxonomy, read_taxonomy

CXR_LABELS = (
    "atelectasis",
    "cardiomegaly",
    "consolidation",
    "pulmonary_edema",
    "pleural_effusion",
    "pneumothorax",
    "lung_nodule_mass",
    "interstitial_lung_disease",
    "emphysema",
    "fracture",
    "mediastinal_hilar_abnormality",
    "support_devices",
)


def _raw(**overrides):
    raw = {
        "version": "t-v1",
        "protocol": "cxr-label-verification",
        "labels": [{"id": "a", "name": "A", "definition": "d", "synonyms": ["alpha"]}],
    }
    raw.update(overrides)
    return raw


def test_the_default_taxonomy_has_the_twelve_labels_in_order():
    assert load_taxonomy().label_ids == CXR_LABELS


def test_version_and_protocol_are_read_from_the_file():
    taxonomy = load_taxonomy("cxr")
    assert taxonomy.version == "cxr-v1"
    assert taxonomy.protocol == Protocol.CXR.value


def test_loading_twice_returns_the_same_cached_instance():
    assert load_taxonomy() is load_taxonomy("cxr")


def test_every_label_has_a_name_a_definition_and_synonyms():
    for label in load_taxonomy().labels:
        assert label.name and label.definition and label.synonyms


def test_get_returns_the_label_definition_or_none():
    taxonomy = load_taxonomy()
    assert taxonomy.get("pneumothorax").name == "Pneumothorax"
    assert taxonomy.get("pneumoperitoneum") is None
    assert "fracture" in taxonomy


def test_an_unknown_taxonomy_name_is_a_clear_value_error():
    with pytest.raises(ValueError, match="unknown taxonomy 'knee'.*cxr"):
        load_taxonomy("knee")


def test_a_path_like_name_is_rejected():
    with pytest.raises(ValueError, match="invalid taxonomy name"):
        load_taxonomy("../contracts")


def test_a_file_with_invalid_yaml_is_a_value_error(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("labels: [unclosed\n")
    with pytest.raises(ValueError, match="'broken': invalid YAML"):
        read_taxonomy(broken)


def test_a_teammate_can_add_a_taxonomy_file_next_to_cxr(tmp_path):
    (tmp_path / "lumbar.yaml").write_text(
        "version: lumbar-v1\nprotocol: lumbar-grading\nextra: {levels: [L1/L2]}\n"
        "labels:\n  - {id: spinal_canal_stenosis, synonyms: [canal stenosis]}\n"
    )
    lumbar = read_taxonomy(tmp_path / "lumbar.yaml")
    assert (lumbar.name, lumbar.version, lumbar.label_ids) == ("lumbar", "lumbar-v1", ("spinal_canal_stenosis",))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (["not", "a", "mapping"], "top level must be a mapping"),
        (_raw(version=""), "missing or empty 'version'"),
        (_raw(labels=[]), "'labels' must be a non-empty list"),
        (_raw(labels=[{"name": "no id"}]), r"labels\[0\]: missing or empty 'id'"),
        (_raw(labels=[{"id": "a", "synonyms": "alpha"}]), "'synonyms' must be a list"),
        (_raw(labels=[{"id": "a", "synonyms": ["x"]}, {"id": "a", "synonyms": ["y"]}]), "duplicate label ids"),
        (_raw(extra=["x"]), "'extra' must be a mapping"),
    ],
)
def test_a_malformed_taxonomy_is_a_value_error_naming_the_problem(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_taxonomy("t", raw)


def test_an_extra_mapping_is_kept_for_protocols_with_other_label_structures():
    raw = _raw(extra={"levels": ["L1/L2", "L2/L3"], "grades": ["Normal/Mild", "Moderate", "Severe"]})
    raw["labels"][0]["extra"] = {"condition": "spinal_canal_stenosis"}
    parsed = parse_taxonomy("lumbar-like", raw)
    assert parsed.extra["levels"] == ["L1/L2", "L2/L3"]
    assert parsed.labels[0].extra["condition"] == "spinal_canal_stenosis"


def test_synonyms_match_plurals_hyphen_variants_and_word_gaps():
    taxonomy = load_taxonomy()
    assert taxonomy.match_labels("small bilateral effusions") == ["pleural_effusion"]
    assert taxonomy.match_labels("platelike changes") == ["atelectasis"]
    assert taxonomy.match_labels("the heart is mildly enlarged") == ["cardiomegaly"]
    assert taxonomy.match_labels("Swan Ganz catheter") == ["support_devices"]


def test_synonyms_match_whole_words_only():
    assert load_taxonomy().match_labels("portable supine report") == []


def test_exclusions_suppress_look_alike_mentions():
    taxonomy = load_taxonomy()
    assert taxonomy.match_labels("small pericardial effusion") == []
    assert taxonomy.match_labels("subcutaneous emphysema") == []
    assert taxonomy.match_labels("calcified granuloma") == []


def test_a_hydropneumothorax_names_both_effusion_and_pneumothorax():
    assert load_taxonomy().match_labels("right hydropneumothorax") == ["pleural_effusion", "pneumothorax"]


def test_nonspecific_descriptors_are_mentions_the_label_knows_to_be_loose():
    taxonomy = load_taxonomy()
    consolidation = taxonomy.get("consolidation")
    text = "patchy airspace opacity and lobar pneumonia"
    spans = consolidation.mentions(text)
    assert [text[s:e] for s, e in spans] == ["airspace opacity", "pneumonia"]
    assert [consolidation.is_nonspecific(text, s, e) for s, e in spans] == [True, False]
    assert taxonomy.match_labels("basilar airspace disease") == ["consolidation"]


def test_nonspecific_must_be_a_list_of_phrases():
    with pytest.raises(ValueError, match="'nonspecific' must be a list"):
        parse_taxonomy("t", _raw(labels=[{"id": "a", "synonyms": ["x"], "nonspecific": "y"}]))
