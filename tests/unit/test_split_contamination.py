"""Issue 11 item 11: the split keeps studies that share an image (SOP Instance UID or content hash)
on one side, whatever their patient ids say (one patient under two spellings, the same images
under two study ids)."""

from __future__ import annotations

import pytest

from services.common.protocols.kit.selection import AcceptedStudy, image_keys, split_by_patient

LABELS = ["a", "b"]


def obj(sop: str, sha: str) -> dict:
    return {"sop_instance_uid": sop, "sha256": sha}


def studies() -> list[AcceptedStudy]:
    """40 patients, one study each; study T1 (patient 'Doe-J') and T2 ('DOE J') are the same
    images; T3 shares only a content hash with T4."""
    out = [AcceptedStudy(f"S{i:02d}", f"P{i:02d}", frozenset({LABELS[i % 2]}), image_keys([obj(f"1.{i}", f"h{i}")]))
           for i in range(40)]
    out += [AcceptedStudy("T1", "Doe-J", frozenset({"a"}), image_keys([obj("9.1", "twin")])),
            AcceptedStudy("T2", "DOE J", frozenset({"a"}), image_keys([obj("9.1", "twin")])),
            AcceptedStudy("T3", "Q-1", frozenset({"b"}), image_keys([obj("9.3", "same-pixels")])),
            AcceptedStudy("T4", "Q-2", frozenset({"b"}), image_keys([obj("9.4", "same-pixels")]))]
    return out


@pytest.mark.parametrize("seed", range(12))
def test_studies_sharing_an_image_land_on_one_side(seed):
    holdout, _ = split_by_patient(studies(), 0.5, LABELS, seed)
    assert ("T1" in holdout) == ("T2" in holdout)
    assert ("T3" in holdout) == ("T4" in holdout)


def test_without_shared_images_the_same_patients_can_be_split_apart():
    """The check above is not vacuous: unlinked, the pairs fall on different sides for some seed."""
    unlinked = [AcceptedStudy(s.study_id, s.patient_id, s.labels) for s in studies()]
    apart = [seed for seed in range(12)
             if ("T1" in (h := split_by_patient(unlinked, 0.5, LABELS, seed)[0])) != ("T2" in h)]
    assert apart
