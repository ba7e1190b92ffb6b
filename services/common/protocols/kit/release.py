"""A benchmark release as files: manifest, labels CSV and dataset card, with checksums.

Built as bytes in memory first (pure, deterministic: same inputs ⇒ same bytes), then written to
the object store: released files to the public bucket, holdout files to the holdout bucket.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.common.objectstore import sha256_hex

MANIFEST_VERSION = "1"


@dataclass(frozen=True)
class ReleaseStudy:
    study_id: str
    patient_id: str
    labels: frozenset[str]
    objects: tuple[dict, ...]  # DicomObject dicts
    # How the study's labels were decided (`study_provenance`); empty for callers that do not know.
    provenance: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


# One row per study of a split, beside its labels: how the labels were decided. `decision_path`
# is "rule" (the consensus rule accepted it) or "adjudicated" (a curator's ruling did).
PROVENANCE_COLUMNS = ("study_id", "decision_path", "votes", "rule", "rule_version", "adjudicator")
DECISION_PATHS = ("rule", "adjudicated")


def study_provenance(row: Mapping, votes: str, rule: str, rule_version: str) -> dict[str, str]:
    """A released study's provenance from its accepted-study row (with `rule`, `rule_version`,
    `adjudicated`, `adjudicator` where consensus knows them; the configured rule otherwise) and
    a summary of its votes (e.g. "agree_all=2;agree_mostly=1;disagree=0")."""
    adjudicated = bool(row.get("adjudicated"))
    return {"decision_path": DECISION_PATHS[adjudicated], "votes": votes,
            "rule": str(row.get("rule") or rule), "rule_version": str(row.get("rule_version") or rule_version),
            "adjudicator": str(row.get("adjudicator") or "") if adjudicated else ""}


def provenance_csv(studies: Sequence[tuple[str, Mapping[str, str]]]) -> bytes:
    """`(study_id, provenance)` pairs as CSV, sorted by study."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PROVENANCE_COLUMNS)
    for study_id, p in sorted(studies, key=lambda s: s[0]):
        writer.writerow([study_id, *(p.get(c, "") for c in PROVENANCE_COLUMNS[1:])])
    return out.getvalue().encode()


def provenance_counts(provenances: Sequence[Mapping[str, str]]) -> dict[str, int]:
    """How many studies each decision path released (the dataset card's figure)."""
    return {path: sum(p.get("decision_path", "rule") == path for p in provenances) for path in DECISION_PATHS}


@dataclass
class ReleaseFiles:
    """Files to write, per bucket kind ("public" or "holdout"), and DICOM copies to make."""

    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    copies: list[tuple[str, str, str]] = field(default_factory=list)  # (bucket kind, source key, dest key)
    manifest_key: str = ""
    manifest_sha256: str = ""


def labels_csv(studies: Sequence[ReleaseStudy], label_ids: Sequence[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["study_id", *label_ids])
    for s in sorted(studies, key=lambda s: s.study_id):
        writer.writerow([s.study_id, *(int(label in s.labels) for label in label_ids)])
    return out.getvalue().encode()


def prevalence(studies: Sequence[ReleaseStudy], label_ids: Sequence[str]) -> dict[str, int]:
    return {label: sum(label in s.labels for s in studies) for label in label_ids}


def _object_entries(prefix: str, s: ReleaseStudy) -> tuple[list[dict], list[tuple[str, str]]]:
    entries, copies = [], []
    for o in sorted(s.objects, key=lambda o: (o["series_instance_uid"], o["instance_number"], o["sop_instance_uid"])):
        dest = f"{prefix}/images/{s.study_id}/{o['series_instance_uid']}/{o['sop_instance_uid']}.dcm"
        entries.append({"key": dest, "sha256": o["sha256"], "sop_instance_uid": o["sop_instance_uid"]})
        copies.append((o["object_key"], dest))
    return entries, copies


def build_release(release_id: str, *, protocol: str, released: Sequence[ReleaseStudy],
                  holdout: Sequence[ReleaseStudy], label_ids: Sequence[str], card: Mapping) -> ReleaseFiles:
    """Lay out every file of a release; nothing here touches the network."""
    rf = ReleaseFiles()
    pub, hold = f"releases/{release_id}", f"releases/{release_id}/holdout"
    pub_objects = _add_split(rf, "public", pub, released, label_ids)
    hold_objects = _add_split(rf, "holdout", hold, holdout, label_ids)
    card_bytes = json.dumps(dict(card), indent=2, sort_keys=True).encode()
    rf.files[("public", f"{pub}/dataset_card.json")] = card_bytes
    holdout_manifest = {"release_id": release_id, "objects": hold_objects,
                        "files": {k: sha256_hex(v) for (b, k), v in sorted(rf.files.items()) if b == "holdout"}}
    hold_bytes = json.dumps(holdout_manifest, indent=2, sort_keys=True).encode()
    rf.files[("holdout", f"{hold}/manifest.json")] = hold_bytes
    manifest = {
        "release_id": release_id, "manifest_version": MANIFEST_VERSION, "protocol": protocol,
        "label_ids": list(label_ids),
        "released": {"study_ids": sorted(s.study_id for s in released), "objects": pub_objects},
        # Holdout study ids are public (evaluators predict on them); their labels are not.
        "holdout": {"study_ids": sorted(s.study_id for s in holdout), "manifest_sha256": sha256_hex(hold_bytes)},
        "files": {k: sha256_hex(v) for (b, k), v in sorted(rf.files.items()) if b == "public"},
    }
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    rf.manifest_key = f"{pub}/manifest.json"
    rf.manifest_sha256 = sha256_hex(body)
    rf.files[("public", rf.manifest_key)] = body
    return rf


def _add_split(rf: ReleaseFiles, bucket: str, prefix: str, studies: Sequence[ReleaseStudy],
               label_ids: Sequence[str]) -> list[dict]:
    rf.files[(bucket, f"{prefix}/labels.csv")] = labels_csv(studies, label_ids)
    if any(s.provenance for s in studies):
        rf.files[(bucket, f"{prefix}/provenance.csv")] = provenance_csv([(s.study_id, s.provenance) for s in studies])
    objects: list[dict] = []
    for s in sorted(studies, key=lambda s: s.study_id):
        entries, copies = _object_entries(prefix, s)
        objects += entries
        rf.copies += [(bucket, src, dst) for src, dst in copies]
    return objects
