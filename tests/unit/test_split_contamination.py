"""Issue 11 item 11: the split keeps studies that share an image (SOP Instance UID, content hash or
pixel digest) or a DICOM patient (keyed PatientID digest) on one side, whatever their patient ids
say (one patient under two spellings, the same images under two study ids or re-exported)."""

from __future__ import annotations

import pytest

from services.common.protocols.kit.selection import AcceptedStudy, image_keys, split_by_patient

LABELS = ["a", "b"]


def obj(sop: str, sha: str, pixels: str | None = None, patient: str | None = None) -> dict:
    return {"sop_instance_uid": sop, "sha256": sha, "pixel_sha256": pixels, "patient_key": patient}


def studies() -> list[AcceptedStudy]:
    """40 patients, one study each; study T1 (patient 'Doe-J') and T2 ('DOE J') are the same
    images; T3 shares only a content hash with T4; T5 only a pixel digest with T6 (re-exported with
    new UIDs); T7 and T8 (patient ids 'R-1', 'R-2') only their DICOM patient."""
    out = [AcceptedStudy(f"S{i:02d}", f"P{i:02d}", frozenset({LABELS[i % 2]}), image_keys([obj(f"1.{i}", f"h{i}")]))
           for i in range(40)]
    out += [AcceptedStudy("T1", "Doe-J", frozenset({"a"}), image_keys([obj("9.1", "twin")])),
            AcceptedStudy("T2", "DOE J", frozenset({"a"}), image_keys([obj("9.1", "twin")])),
            AcceptedStudy("T3", "Q-1", frozenset({"b"}), image_keys([obj("9.3", "same-pixels")])),
            AcceptedStudy("T4", "Q-2", frozenset({"b"}), image_keys([obj("9.4", "same-pixels")])),
            AcceptedStudy("T5", "X-1", frozenset({"a"}), image_keys([obj("9.5", "h5", pixels="px")])),
            AcceptedStudy("T6", "X-2", frozenset({"a"}), image_keys([obj("9.6", "h6", pixels="px")])),
            AcceptedStudy("T7", "R-1", frozenset({"b"}), image_keys([obj("9.7", "h7", pixels="p7", patient="k")])),
            AcceptedStudy("T8", "R-2", frozenset({"b"}), image_keys([obj("9.8", "h8", pixels="p8", patient="k")]))]
    return out


@pytest.mark.parametrize("seed", range(12))
def test_studies_sharing_an_image_land_on_one_side(seed):
    holdout, _ = split_by_patient(studies(), 0.5, LABELS, seed)
    assert ("T1" in holdout) == ("T2" in holdout)
    assert ("T3" in holdout) == ("T4" in holdout)
    assert ("T5" in holdout) == ("T6" in holdout)
    assert ("T7" in holdout) == ("T8" in holdout)


def test_a_missing_digest_links_nothing():
    """Objects ingested before the digests existed (None) are not all one image or one patient."""
    keys = image_keys([obj("1", "h1"), obj("2", "h2", pixels="p")])
    assert keys == {"sop:1", "sop:2", "sha256:h1", "sha256:h2", "pixels:p"}


def test_without_shared_images_the_same_patients_can_be_split_apart():
    """The check above is not vacuous: unlinked, the pairs fall on different sides for some seed."""
    unlinked = [AcceptedStudy(s.study_id, s.patient_id, s.labels) for s in studies()]
    for a, b in (("T1", "T2"), ("T5", "T6"), ("T7", "T8")):
        apart = [seed for seed in range(12)
                 if (a in (h := split_by_patient(unlinked, 0.5, LABELS, seed)[0])) != (b in h)]
        assert apart, (a, b)


def test_a_real_image_reexported_with_new_uids_lands_with_its_twin():
    """Real DICOM through ingest's parsing (scrubbed: UIDs replaced again): the re-export in RLE
    with new UIDs and another PatientID shares no UID or file hash with the original, only its
    pixels; the split keeps the two on one side, and would not without the pixel digest."""
    from pydicom.uid import RLELossless

    from services.gateway.ingest import validate_study
    from tests.support.factories import reexported

    def parsed(study_id: str, patient_id: str, data: bytes) -> dict:
        [p], _ = validate_study(study_id, patient_id, "report", [("a.dcm", data)], scrub=True)
        return p.obj.model_dump(mode="json")

    original = parsed("MR-1", "P-1", reexported("MR_small.dcm", patient_id="MRN-1"))
    twin = parsed("MR-2", "P-2", reexported("MR_small.dcm", patient_id="MRN-2", syntax=RLELossless))
    assert original["sop_instance_uid"] != twin["sop_instance_uid"] and original["sha256"] != twin["sha256"]
    assert original["pixel_sha256"] == twin["pixel_sha256"] is not None
    filler = [AcceptedStudy(f"S{i:02d}", f"P{i:02d}", frozenset({LABELS[i % 2]}), image_keys([obj(f"1.{i}", f"h{i}")]))
              for i in range(20)]
    linked = [*filler, AcceptedStudy("MR-1", "P-1", frozenset({"a"}), image_keys([original])),
              AcceptedStudy("MR-2", "P-2", frozenset({"a"}), image_keys([twin]))]
    for seed in range(12):
        holdout, _ = split_by_patient(linked, 0.5, LABELS, seed)
        assert ("MR-1" in holdout) == ("MR-2" in holdout), seed
    without = [*filler, *(AcceptedStudy(s.study_id, s.patient_id, s.labels,
                                        frozenset(k for k in s.images if not k.startswith("pixels:")))
                          for s in linked[-2:])]
    assert any(("MR-1" in (h := split_by_patient(without, 0.5, LABELS, seed)[0])) != ("MR-2" in h)
               for seed in range(12))
