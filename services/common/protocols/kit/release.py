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
    objects: list[dict] = []
    for s in sorted(studies, key=lambda s: s.study_id):
        entries, copies = _object_entries(prefix, s)
        objects += entries
        rf.copies += [(bucket, src, dst) for src, dst in copies]
    return objects
