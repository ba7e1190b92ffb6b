"""The rule extractor on the way radiologists really write (one test group per rule family).

The sentences are written for these tests in the patterns real reports use; none is copied from a
report collection.
"""

import pytest

from services.common.contracts import Certainty, Laterality
from services.common.protocols.cxr.extract import (
    NONSPECIFIC_CONFIDENCE,
    POSSIBLE_CONFIDENCE,
    PRESENT_CONFIDENCE,
    PROBABLE_CONFIDENCE,
    extract_findings,
)
from services.common.protocols.cxr.lexicon import map_findings
from services.common.taxonomy import load_taxonomy

TAXONOMY = load_taxonomy()


def graded(report: str) -> dict[str, tuple[Certainty, float]]:
    """label id -> (flag, confidence) of the suggestion the offline backend makes for it."""
    suggested, _ = map_findings(extract_findings(report, TAXONOMY), TAXONOMY)
    return {
        s.label_id: (Certainty.UNCERTAIN if s.uncertain else Certainty.PRESENT, s.confidence)
        for s in suggested
    }


def labels(report: str) -> set[str]:
    return set(graded(report))


# --- negation over long lists and after the finding --------------------------------------


@pytest.mark.parametrize(
    "report",
    [
        "No focal airspace consolidation, suspicious pulmonary nodule, large pleural effusion,"
        " or pneumothorax is seen.",
        "There is no focal consolidation, worrisome mass, pleural effusion of any size or pneumothorax identified.",
        "Lungs are clear without evidence of focal consolidation, large effusion or pneumothorax.",
        "There is no blunting of the costophrenic angles to suggest effusion"
        " or apical pleural line to suggest pneumothorax.",
        "The lungs do not demonstrate consolidation or effusion.",
        "This does not appear to be a pneumothorax.",
        "Neither effusion nor pneumothorax.",
        "No focal consolidation, pleural effusion with loculation, or pneumothorax.",
        "No acute fracture, XXXX, pleural effusion, or pneumothorax.",
    ],
)
def test_a_negation_covers_every_item_of_a_list_however_long(report):
    assert labels(report) == set()


@pytest.mark.parametrize(
    ("report", "present"),
    [
        ("No pleural effusion, the heart is moderately enlarged.", "cardiomegaly"),
        ("No pneumothorax, with a small left pleural effusion.", "pleural_effusion"),
        ("No pneumothorax, there is a small left pleural effusion.", "pleural_effusion"),
        ("No pneumothorax; small right effusion.", "pleural_effusion"),
    ],
)
def test_a_new_clause_ends_the_negated_list(report, present):
    assert labels(report) == {present}


# --- hedges: probable commits, possible does not ------------------------------------------


@pytest.mark.parametrize(
    ("report", "label_id", "confidence"),
    [
        ("Probable small left pleural effusion.", "pleural_effusion", PROBABLE_CONFIDENCE),
        ("Bibasilar opacities, most likely atelectasis.", "atelectasis", PROBABLE_CONFIDENCE),
        ("Subsegmental atelectasis versus scarring at the left base.", "atelectasis", PROBABLE_CONFIDENCE),
        ("Borderline heart size.", "cardiomegaly", PROBABLE_CONFIDENCE),
        ("The heart is borderline in size.", "cardiomegaly", PROBABLE_CONFIDENCE),
        ("Possible small left pleural effusion.", "pleural_effusion", POSSIBLE_CONFIDENCE),
        ("Blunting of the right costophrenic angle may represent a small effusion.", "pleural_effusion",
         POSSIBLE_CONFIDENCE),
        ("A small right pleural effusion is suspected.", "pleural_effusion", POSSIBLE_CONFIDENCE),
        ("Early pneumonia cannot be excluded.", "consolidation", POSSIBLE_CONFIDENCE),
        ("There is raised concern for pneumonia.", "consolidation", POSSIBLE_CONFIDENCE),
    ],
)
def test_hedges_are_flagged_and_graded(report, label_id, confidence):
    assert graded(report) == {label_id: (Certainty.UNCERTAIN, confidence)}


def test_a_weak_hedge_before_a_versus_governs_both_alternatives():
    assert graded("Question of left basilar atelectasis versus pneumonia.") == {
        "atelectasis": (Certainty.UNCERTAIN, POSSIBLE_CONFIDENCE),
        "consolidation": (Certainty.UNCERTAIN, POSSIBLE_CONFIDENCE),
    }


def test_a_firm_finding_keeps_the_top_confidence():
    assert graded("Moderate right pleural effusion.") == {"pleural_effusion": (Certainty.PRESENT, PRESENT_CONFIDENCE)}


# --- loose descriptors and what the sentence attributes them to ----------------------------


@pytest.mark.parametrize(
    "report",
    [
        "Streaky bibasilar airspace opacities compatible with subsegmental atelectasis.",
        "Patchy left basilar airspace disease, most consistent with atelectasis.",
        "Right base airspace opacity in keeping with plate-like atelectasis.",
        "Mild bibasilar airspace disease, probably atelectasis.",
        "Left lower lobe airspace opacity, XXXX atelectasis.",
    ],
)
def test_an_opacity_attributed_to_atelectasis_is_not_also_pneumonia(report):
    assert "consolidation" not in labels(report)
    assert "atelectasis" in labels(report)


@pytest.mark.parametrize(
    "report",
    [
        "Right lower lobe airspace disease and small right pleural effusion.",
        "Retrocardiac airspace opacity which may represent atelectasis or aspiration.",
    ],
)
def test_a_second_finding_or_an_alternative_leaves_the_descriptor_suggested(report):
    assert "consolidation" in labels(report)


def test_a_firm_loose_descriptor_is_suggested_with_low_confidence():
    assert graded("Focal airspace disease in the right middle lobe.") == {
        "consolidation": (Certainty.PRESENT, NONSPECIFIC_CONFIDENCE)
    }


def test_a_descriptor_explained_by_a_hedged_finding_of_its_own_label_takes_the_hedge():
    assert graded("New right lower lobe airspace opacity, likely pneumonia.") == {
        "consolidation": (Certainty.UNCERTAIN, PROBABLE_CONFIDENCE)
    }


def test_a_hedged_finding_raises_a_firm_descriptor_s_confidence_but_not_its_flag():
    assert graded("New right lower lobe airspace opacity. Pneumonia is likely.") == {
        "consolidation": (Certainty.PRESENT, PROBABLE_CONFIDENCE)
    }


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ("A 7 mm nodular opacity projects over the left fifth rib.", NONSPECIFIC_CONFIDENCE),
        ("Indeterminate lesion in the right upper lobe.", NONSPECIFIC_CONFIDENCE),
        ("Spiculated 2 cm mass in the right upper lobe.", PRESENT_CONFIDENCE),
    ],
)
def test_nodular_opacities_and_lesions_are_loose_nodule_descriptors(report, expected):
    assert graded(report) == {"lung_nodule_mass": (Certainty.PRESENT, expected)}


@pytest.mark.parametrize(
    "report",
    [
        "A 6 mm nodular opacity over the left lower chest most likely represents a nipple shadow.",
        "Small nodular densities consistent with old granulomatous disease.",
        "Left basilar airspace opacity, likely overlying soft tissue.",
        "Right apical airspace disease, probably scarring.",
    ],
)
def test_a_descriptor_explained_as_a_look_alike_is_dropped(report):
    assert labels(report) == set()


def test_a_descriptor_whose_explanation_is_disease_is_kept():
    assert labels("Nodular opacity in the right upper lobe, likely a pulmonary nodule.") == {"lung_nodule_mass"}


def test_a_lucent_rib_lesion_is_not_a_lung_nodule():
    assert "lung_nodule_mass" not in labels("Lucent lesion in the right sixth rib, unchanged.")


# --- healed, old and calcified findings ---------------------------------------------------


@pytest.mark.parametrize(
    "report",
    [
        "Sequela of prior granulomatous infection.",
        "Calcified hilar lymph nodes from old granulomatous disease.",
        "Apical scarring consistent with remote tuberculous infection.",
        "Lungs are clear. Evidence of previous infection in the right apex.",
    ],
)
def test_healed_infection_is_not_pneumonia(report):
    assert "consolidation" not in labels(report)


def test_a_calcified_nodule_is_a_nodule_and_a_calcified_granuloma_is_not():
    assert labels("Calcified nodule in the left lower lobe.") == {"lung_nodule_mass"}
    assert labels("Calcified granuloma in the left lower lobe.") == set()


# --- history, hypotheticals and comparisons -----------------------------------------------


@pytest.mark.parametrize(
    "report",
    [
        "Patient with a history of lung cancer. No acute findings.",
        "Known history of right upper lobe mass, treated.",
        "Overlying breast tissue could obscure a small pulmonary nodule.",
        "Follow-up is advised to exclude an underlying mass.",
        "Follow-up radiograph recommended to rule-out pneumonia.",
    ],
)
def test_history_and_hypotheticals_are_not_findings(report):
    assert labels(report) == set()


@pytest.mark.parametrize(
    "report",
    ["Skin fold simulating a right pneumothorax.", "Nipple shadow mimicking a nodule at the left base."],
)
def test_a_look_alike_is_not_the_finding_it_resembles(report):
    assert labels(report) == set()


def test_a_blunted_angle_is_a_loose_effusion_sign():
    assert graded("The left costophrenic angle is blunted.") == {
        "pleural_effusion": (Certainty.PRESENT, NONSPECIFIC_CONFIDENCE)
    }


def test_a_new_finding_after_the_history_clause_is_kept():
    assert labels("History of breast cancer, new 1 cm nodule in the right upper lobe.") == {"lung_nodule_mass"}


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ("Unchanged small left pleural effusion.", {"pleural_effusion"}),
        ("Left basilar atelectasis, improved since the prior study.", {"atelectasis"}),
        ("The previously seen right pneumothorax has resolved.", set()),
        ("Interval resolution of the right lower lobe pneumonia.", set()),
    ],
)
def test_comparisons_keep_stable_findings_and_drop_resolved_ones(report, expected):
    assert labels(report) == expected


# --- heart size in words ------------------------------------------------------------------


@pytest.mark.parametrize(
    "report",
    ["The heart is large.", "Heart size remains mildly large.", "Interval increase in heart size."],
)
def test_a_large_heart_is_cardiomegaly(report):
    assert labels(report) == {"cardiomegaly"}


# --- sections -----------------------------------------------------------------------------


def test_only_findings_and_impression_sections_are_read():
    report = (
        "INDICATION: Cough, rule out pneumonia. History of pneumothorax.\n"
        "COMPARISON: Prior film showed a left pleural effusion.\n"
        "FINDINGS: The heart is normal in size. The lungs are clear.\n"
        "IMPRESSION: Small right pleural effusion."
    )
    assert labels(report) == {"pleural_effusion"}


def test_a_sentence_typed_without_a_space_after_its_full_stop_still_ends():
    report = "No pneumothorax.Small left pleural effusion."
    assert labels(report) == {"pleural_effusion"}
    assert labels("Normal chest x-XXXX. No acute disease, e.g. no effusion.") == set()


# --- exclusion stated after the finding ---------------------------------------------------


@pytest.mark.parametrize(
    "report",
    [
        "Pneumothorax has been excluded.",
        "Pneumonia is ruled out.",
        "A pleural effusion was excluded on the decubitus view.",
        "Pneumothorax excluded.",
        "Pneumonia is not suspected.",
        "Pneumothorax is negative.",
    ],
)
def test_an_exclusion_after_the_finding_negates_it(report):
    assert labels(report) == set()


@pytest.mark.parametrize(
    ("report", "label_id"),
    [
        ("Pneumothorax has not been excluded.", "pneumothorax"),
        ("A right upper lobe mass must be excluded.", "lung_nodule_mass"),
        ("Pneumonia needs to be ruled out clinically.", "consolidation"),
    ],
)
def test_an_exclusion_not_made_or_still_to_make_is_a_weak_hedge(report, label_id):
    assert graded(report) == {label_id: (Certainty.UNCERTAIN, POSSIBLE_CONFIDENCE)}


def test_a_region_excluded_from_the_image_does_not_negate_the_finding():
    assert labels("Small left pleural effusion, partly excluded from the field of view.") == {"pleural_effusion"}


# --- template fields named by a finding ----------------------------------------------------


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ("FINDINGS:\nPneumothorax: None.\nPleural effusion: Small left.\nConsolidation: not seen.",
         {"pleural_effusion": (Certainty.PRESENT, PRESENT_CONFIDENCE)}),
        ("IMPRESSION: Effusion: none. Pneumothorax: small right apical.",
         {"pneumothorax": (Certainty.PRESENT, PRESENT_CONFIDENCE)}),
        ("Pneumothorax: possible tiny left apical.\nAtelectasis: likely bibasilar.\nCardiomegaly: absent.",
         {"pneumothorax": (Certainty.UNCERTAIN, POSSIBLE_CONFIDENCE),
          "atelectasis": (Certainty.UNCERTAIN, PROBABLE_CONFIDENCE)}),
        ("Pleural effusion: small left, no loculation.\nPneumothorax: No.",
         {"pleural_effusion": (Certainty.PRESENT, PRESENT_CONFIDENCE)}),
        ("IMPRESSION: Pleural effusion: no change.", {"pleural_effusion": (Certainty.PRESENT, PRESENT_CONFIDENCE)}),
        ("FINDINGS:\nPneumothorax - none.\nPleural effusion - small left.",
         {"pleural_effusion": (Certainty.PRESENT, PRESENT_CONFIDENCE)}),
    ],
)
def test_a_template_field_named_by_a_finding_is_read_from_its_value(report, expected):
    assert graded(report) == expected


def test_a_field_s_evidence_is_its_name_and_value():
    report = "FINDINGS:\nLungs: Clear.\nPleural effusion: Small left."
    (finding,) = extract_findings(report, TAXONOMY)
    assert finding.evidence == "Pleural effusion: Small left."


@pytest.mark.parametrize(
    "report", ["Pneumothorax: excluded.", "Pneumothorax - no longer seen.", "Pneumonia: ruled out."]
)
def test_a_field_whose_value_is_a_negation_after_the_finding_is_absent(report):
    assert labels(report) == set()


def test_a_field_whose_value_is_an_exclusion_not_made_is_a_weak_hedge():
    assert graded("Pneumothorax: not excluded.") == {"pneumothorax": (Certainty.UNCERTAIN, POSSIBLE_CONFIDENCE)}


def test_a_field_name_with_a_hedge_of_its_own_keeps_the_hedge():
    assert graded("IMPRESSION: Possible pneumonia: right lower lobe.") == {
        "consolidation": (Certainty.UNCERTAIN, POSSIBLE_CONFIDENCE)}


# --- a field's side, its name and value read together, checklist answers -------------------


@pytest.mark.parametrize(
    ("report", "label_id", "side"),
    [
        ("FINDINGS:\nPneumothorax: small right apical.", "pneumothorax", Laterality.RIGHT),
        ("IMPRESSION: Pleural effusion: small left, no loculation.", "pleural_effusion", Laterality.LEFT),
        ("Pleural effusions: small, bilateral.", "pleural_effusion", Laterality.BILATERAL),
        ("Pneumothorax - tiny, left apex.", "pneumothorax", Laterality.LEFT),
        # the name's own side still wins, as in a sentence
        ("Right pleural effusion: small, left lung clear.", "pleural_effusion", Laterality.RIGHT),
    ],
)
def test_a_field_s_side_comes_from_its_value(report, label_id, side):
    (finding,) = [f for f in extract_findings(report, TAXONOMY) if f.label_hint == label_id]
    assert finding.laterality is side


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ("FINDINGS:\nHeart: mildly enlarged.\nLungs: clear.",
         {"cardiomegaly": (Certainty.PRESENT, PRESENT_CONFIDENCE)}),
        ("IMPRESSION: Heart size: enlarged.", {"cardiomegaly": (Certainty.PRESENT, PRESENT_CONFIDENCE)}),
        ("Cardiac silhouette - enlarged.", {"cardiomegaly": (Certainty.PRESENT, PRESENT_CONFIDENCE)}),
        ("Heart: possibly enlarged.", {"cardiomegaly": (Certainty.UNCERTAIN, POSSIBLE_CONFIDENCE)}),
        ("Mediastinum: widened.", {"mediastinal_hilar_abnormality": (Certainty.PRESENT, PRESENT_CONFIDENCE)}),
        ("FINDINGS:\nHeart: not enlarged.\nMediastinum: normal.", {}),
        ("Heart: normal size, large hiatal hernia.", {}),
    ],
)
def test_a_field_named_by_an_organ_is_read_with_its_value(report, expected):
    assert graded(report) == expected


def test_a_field_whose_value_names_the_finding_is_one_finding():
    assert [f.evidence for f in extract_findings("Heart: The heart is enlarged.", TAXONOMY)] == [
        "The heart is enlarged."]


@pytest.mark.parametrize(
    "report",
    [
        "Right pneumothorax, now resolved.",
        "Left pleural effusion, which has since resolved.",
        "Right chest tube, now removed.",
        "Left lower lobe atelectasis (since cleared).",
        "Right pneumothorax - no longer seen.",
    ],
)
def test_a_resolution_told_as_an_aside_drops_the_finding(report):
    assert labels(report) == set()


@pytest.mark.parametrize(
    ("report", "label_id"),
    [
        ("Right pneumothorax, nearly resolved.", "pneumothorax"),  # some is left
        ("Bilateral pleural effusions, resolved on the right.", "pleural_effusion"),  # the left one stays
        ("Right pneumothorax, new since the prior study.", "pneumothorax"),
    ],
)
def test_a_partial_resolution_or_another_aside_keeps_the_finding(report, label_id):
    assert labels(report) == {label_id}


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ("Pneumothorax? No.", {}),
        ("Pneumothorax? no", {}),
        ("Pneumothorax or pleural effusion? None.", {}),
        ("Pneumothorax? No. Pleural effusion? Yes, small left.",
         {"pleural_effusion": (Certainty.PRESENT, PRESENT_CONFIDENCE)}),
        ("Pneumonia? Possibly.", {"consolidation": (Certainty.UNCERTAIN, POSSIBLE_CONFIDENCE)}),
        # unanswered, or followed by a sentence of its own: still the question's hedge
        ("Pneumonia? Recommend a lateral view.", {"consolidation": (Certainty.UNCERTAIN, POSSIBLE_CONFIDENCE)}),
        ("Pneumothorax? No. Pleural effusion?", {"pleural_effusion": (Certainty.UNCERTAIN, POSSIBLE_CONFIDENCE)}),
    ],
)
def test_a_checklist_question_is_read_from_its_answer(report, expected):
    assert graded(report) == expected


def test_an_answer_s_side_is_the_finding_s():
    (finding,) = extract_findings("Pneumothorax? Yes, small right apical.", TAXONOMY)
    assert (finding.certainty, finding.laterality) == (Certainty.PRESENT, Laterality.RIGHT)
    assert finding.evidence == "Pneumothorax? Yes, small right apical."


def test_no_as_a_number_does_not_end_the_sentence():
    (finding,) = extract_findings("Endotracheal tube no. 7 in place.", TAXONOMY)
    assert finding.evidence == "Endotracheal tube no. 7 in place."
