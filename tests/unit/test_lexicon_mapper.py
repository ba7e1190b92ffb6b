"""The lexicon mapper: findings in, taxonomy labels (and unmapped findings) out."""

from services.common.contracts import Certainty, Finding
from services.common.protocols.cxr.lexicon import PRESENT_CONFIDENCE, UNCERTAIN_CONFIDENCE, map_findings
from services.common.taxonomy import load_taxonomy

TAXONOMY = load_taxonomy()


def finding(text, hint=None, certainty=Certainty.PRESENT, evidence=None):
    return Finding(text=text, label_hint=hint, certainty=certainty, evidence=evidence or f"{text}.")


def test_labels_come_out_in_taxonomy_order_whatever_the_finding_order():
    findings = [finding("ETT", "support_devices"), finding("effusion", "pleural_effusion"),
                finding("atelectasis", "atelectasis")]
    labels, unmapped = map_findings(findings, TAXONOMY)
    assert [label.label_id for label in labels] == ["atelectasis", "pleural_effusion", "support_devices"]
    assert unmapped == []


def test_a_label_is_uncertain_only_when_every_supporting_finding_is_uncertain():
    hedged = finding("pneumonia", "consolidation", Certainty.UNCERTAIN, "Possible pneumonia.")
    firm = finding("consolidation", "consolidation", Certainty.PRESENT, "RLL consolidation.")
    (only_hedged,), _ = map_findings([hedged], TAXONOMY)
    (mixed,), _ = map_findings([hedged, firm], TAXONOMY)
    assert (only_hedged.uncertain, only_hedged.confidence) == (True, UNCERTAIN_CONFIDENCE)
    assert (mixed.uncertain, mixed.confidence) == (False, PRESENT_CONFIDENCE)


def test_evidence_lists_each_supporting_sentence_once_in_report_order():
    findings = [
        finding("ETT", "support_devices", evidence="ETT and NGT in place."),
        finding("NGT", "support_devices", evidence="ETT and NGT in place."),
        finding("PICC", "support_devices", evidence="Right PICC in the SVC."),
    ]
    (label,), _ = map_findings(findings, TAXONOMY)
    assert label.evidence == ["ETT and NGT in place.", "Right PICC in the SVC."]


def test_a_finding_without_a_hint_is_matched_by_its_text():
    labels, unmapped = map_findings([finding("small left pleural effusion")], TAXONOMY)
    assert [label.label_id for label in labels] == ["pleural_effusion"]
    assert unmapped == []


def test_a_finding_whose_hint_is_outside_the_taxonomy_falls_back_to_its_text():
    labels, _ = map_findings([finding("right pneumothorax", hint="ptx_label_v0")], TAXONOMY)
    assert [label.label_id for label in labels] == ["pneumothorax"]


def test_a_finding_that_names_no_label_is_returned_unmapped_and_invents_no_label():
    odd = finding("pneumoperitoneum under the right hemidiaphragm", hint="pneumoperitoneum")
    labels, unmapped = map_findings([odd], TAXONOMY)
    assert labels == []
    assert unmapped == [odd]


def test_suggested_labels_are_always_taxonomy_ids():
    findings = [finding(t) for t in ("hydropneumothorax", "tortuous aorta", "old rib fx", "COPD")]
    labels, _ = map_findings(findings, TAXONOMY)
    assert {label.label_id for label in labels} <= set(TAXONOMY.label_ids)
    assert [label.label_id for label in labels] == ["pleural_effusion", "pneumothorax", "emphysema", "fracture"]


def test_no_findings_means_no_labels():
    assert map_findings([], TAXONOMY) == ([], [])


def test_the_confidence_is_the_firmest_graded_finding_s():
    possible = Finding(text="effusion", label_hint="pleural_effusion", certainty=Certainty.UNCERTAIN,
                       evidence="Possible effusion.", confidence=0.6)
    probable = Finding(text="effusion", label_hint="pleural_effusion", certainty=Certainty.UNCERTAIN,
                       evidence="Probable effusion.", confidence=0.8)
    (label,), _ = map_findings([possible, probable], TAXONOMY)
    assert (label.uncertain, label.confidence) == (True, 0.8)
