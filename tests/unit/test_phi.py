"""Identifiers in report text: found by rule, masked in place (offsets kept), and clinical text
(measurements, sizes, levels) left alone."""

from __future__ import annotations

import pytest

from services.common import phi


@pytest.mark.parametrize(("text", "hidden", "rule"), [
    ("Discussed with Dr. Gregory House.", "Gregory House", "name_after_title"),
    ("Called Mrs Garcia.", "Garcia", "name_after_title"),
    ("Compared with 03/14/2019.", "03/14/2019", "date"),
    ("Prior from 2019-03-14 is stable.", "2019-03-14", "date"),
    ("Compared with Jan 5, 2018.", "Jan 5, 2018", "date"),
    ("Seen 5 March 2020.", "5 March 2020", "date"),
    ("MRN: 48213377.", "48213377", "labelled_id"),
    ("Accession # A1234567 read.", "A1234567", "labelled_id"),
    ("Call (617) 555-0134 with results.", "(617) 555-0134", "phone"),
    ("Call 617-555-0199.", "617-555-0199", "phone"),
    ("Lives at 221 Baker Street, Boston, MA 02115 alone.", "221 Baker Street, Boston, MA 02115", "address"),
    ("Send to jane.doe@example.org today.", "jane.doe@example.org", "email"),
    ("Reference 90817263 on file.", "90817263", "mrn_like"),
])
def test_each_rule_masks_its_identifier_in_place(text, hidden, rule):
    masked = phi.mask(text)
    start = text.index(hidden)
    assert masked.spans == (phi.MaskSpan(rule, start, start + len(hidden)),)
    assert masked.text == text.replace(hidden, "_" * len(hidden))
    assert len(masked.text) == len(text)


@pytest.mark.parametrize("text", [
    "Small left pleural effusion. Possible right lower lobe pneumonia.",
    "A 3 mm nodule in the right upper lobe; 12 x 8 mm on series 3 image 45.",
    "Disc bulge at L4-L5 and L5-S1, grade 2 spondylolisthesis.",
    "Lung volume 4500000 mL. Density 1200000 HU.",
    "Heart size is normal. No pneumothorax.",
])
def test_clinical_text_is_left_alone(text):
    assert phi.mask(text) == phi.Masked(text, ())


def test_masking_twice_changes_nothing_and_the_audit_does_not_repeat_the_identifier():
    once = phi.mask("Dr. Smith, MRN 48213377, 03/14/2019.")
    assert phi.mask(once.text) == phi.Masked(once.text, ())
    assert once.audit() == [{"rule": "name_after_title", "start": 4, "end": 9},
                            {"rule": "labelled_id", "start": 15, "end": 23},
                            {"rule": "date", "start": 25, "end": 35}]


def _find_with_every_rule(text):
    """`phi.find` without its shortcuts: every rule's pattern run on the whole text."""
    spans, taken = [], [False] * len(text)
    for rule, pattern in phi.RULES:
        for match in pattern.finditer(text):
            start, end = match.span("id") if "id" in pattern.groupindex else match.span()
            if start == end or any(taken[start:end]):
                continue
            taken[start:end] = [True] * (end - start)
            spans.append(phi.MaskSpan(rule, start, end))
    return sorted(spans, key=lambda s: s.start)


@pytest.mark.parametrize("text", [
    "Discussed with Dr. Gregory House on Jan 5, 2018; MRN: 48213377; call (617) 555-0134.",
    "Prof.Xavier, Doctor Who, Miss Marple and Ms. Jones at 12 Grimmauld Place, London.",
    "Seen 5 March 2020 and March 2021; prior 2019-03-14 and 3/4/19. Acc# 1234 and SSN 123-45-6789.",
    "jane@example.org wrote; +1 617.555.0199; 221B Baker Street; 10 Downing St, London SW 12345.",
    "Study 1234. Small left pleural effusion. Possible right lower lobe pneumonia. No pneumothorax.",
    "A 3 mm nodule; 12 x 8 mm; L4-L5; volume 4500000 mL; reference 90817263 on file; 1234567.",
    "", "No digits, no titles, no at signs here.",
])
def test_the_rules_skipped_for_what_a_text_lacks_would_have_found_nothing(text):
    assert phi.find(text) == _find_with_every_rule(text)


def test_masked_text_is_masked_once():
    text = "Dr. Smith, MRN 48213377, 03/14/2019."
    masked = phi.masked(text)
    assert isinstance(masked, phi.MaskedText) and masked == phi.mask(text).text
    assert phi.masked(masked) is masked  # not masked again
    assert phi.masked(str(masked)) == masked  # a plain string is always masked (idempotently)
