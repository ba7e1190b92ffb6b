"""A lumbar benchmark release in the RSNA 2024 competition layout.

Accepted studies are selected and split by patient with the same `select_and_split` as CXR (a
study's "labels" are its findings, `<cell>:<grade>` for Moderate/Severe cells, so selection
favours rare findings and the split balances them). Each split is a complete competition root:
`train.csv`, `train_label_coordinates.csv` (the consensus points), `train_series_descriptions.csv`
and `train_images/<study_id>/<series_id>/<instance_number>.dcm`, where `series_id` is the
SeriesInstanceUID. Released files go to the public bucket under `releases/<id>/`, holdout files
to the holdout bucket under `releases/<id>/holdout/`. Pure: bytes in memory, copies listed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.contracts import SelectionPlan
from services.common.objectstore import sha256_hex
from services.common.protocols.kit.release import (
    MANIFEST_VERSION,
    ReleaseFiles,
    provenance_counts,
    provenance_csv,
    study_provenance,
)
from services.common.protocols.kit.rule_config import RuleConfig
from services.common.protocols.kit.selection import AcceptedStudy, image_keys, select_and_split
from services.common.protocols.lumbar.competition import CompetitionStudy, Coordinate, image_path, split_csvs
from services.common.protocols.lumbar.grid import CELL_IDS, CONDITIONS, Grade, cell_of
from services.common.protocols.lumbar.scoring import METRIC_VERSION as LUMBAR_METRIC_VERSION

FINDING_IDS = tuple(f"{c}:{g.value}" for c in CELL_IDS for g in (Grade.MODERATE, Grade.SEVERE))
TAXONOMY_VERSION = "lumbar-v1"


@dataclass(frozen=True)
class LumbarStudy:
    study_id: str
    patient_id: str
    cells: tuple[dict, ...]  # CellConsensus dicts
    objects: tuple[dict, ...]  # DicomObject dicts
    provenance: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def grades(self) -> dict[str, str]:
        return {c["cell_id"]: c["grade"] for c in self.cells}


@dataclass(frozen=True)
class ComposedLumbarRelease:
    files: ReleaseFiles
    released: list[LumbarStudy]
    holdout: list[LumbarStudy]


def compose_lumbar_release(release_id: str, protocol: str, rows: Sequence[Mapping], plan: SelectionPlan,
                           funnel: Mapping[str, int], rule: RuleConfig, agreement: Mapping) -> ComposedLumbarRelease:
    """Select and split accepted studies (rows with study_id, patient_id, labels, objects, cells)."""
    studies = {r["study_id"]: LumbarStudy(r["study_id"], r["patient_id"], tuple(r["cells"] or ()),
                                          tuple(r["objects"]), lumbar_provenance(r, rule)) for r in rows}
    split = select_and_split([AcceptedStudy(r["study_id"], r["patient_id"], frozenset(r["labels"]),
                                            image_keys(r["objects"])) for r in rows],
                             plan, FINDING_IDS)
    released = [studies[sid] for sid in split.released]
    holdout = [studies[sid] for sid in split.holdout]
    rf = ReleaseFiles()
    pub, hold = f"releases/{release_id}", f"releases/{release_id}/holdout"
    pub_objects = _add_split(rf, "public", pub, released)
    hold_objects = _add_split(rf, "holdout", hold, holdout)
    card = lumbar_card(release_id, protocol, plan, funnel, rule, agreement, released, holdout, split.unmet)
    rf.files[("public", f"{pub}/dataset_card.json")] = json.dumps(card, indent=2, sort_keys=True).encode()
    _manifests(rf, release_id, protocol, pub, hold, released, holdout, pub_objects, hold_objects)
    return ComposedLumbarRelease(rf, released, holdout)


def competition_study(s: LumbarStudy) -> CompetitionStudy:
    """The study as the competition layout describes it (images are listed, not read)."""
    grades = {cell_of(c["cell_id"]): Grade(c["grade"]) for c in s.cells}
    coordinates = [Coordinate(s.study_id, c["point"]["series_instance_uid"], c["point"]["instance_number"],
                              *cell_of(c["cell_id"]), c["point"]["x"], c["point"]["y"])
                   for c in s.cells if c.get("point")]
    series = {o["series_instance_uid"]: o.get("series_description", "") for o in _ordered(s.objects)}
    return CompetitionStudy(s.study_id, series=series, grades=grades, coordinates=coordinates)


def _ordered(objects: Sequence[dict]) -> list[dict]:
    return sorted(objects, key=lambda o: (o["series_instance_uid"], o["instance_number"], o["sop_instance_uid"]))


def _add_split(rf: ReleaseFiles, bucket: str, prefix: str, studies: Sequence[LumbarStudy]) -> list[dict]:
    ordered = sorted(studies, key=lambda s: s.study_id)
    for name, data in split_csvs([competition_study(s) for s in ordered]).items():
        rf.files[(bucket, f"{prefix}/{name}")] = data
    if any(s.provenance for s in ordered):  # beside the competition's files, which keep their layout
        rf.files[(bucket, f"{prefix}/provenance.csv")] = provenance_csv([(s.study_id, s.provenance) for s in ordered])
    entries = []
    for s in ordered:
        for o in _ordered(s.objects):
            dest = f"{prefix}/{image_path('train', s.study_id, o['series_instance_uid'], o['instance_number'])}"
            entries.append({"key": dest, "sha256": o["sha256"], "sop_instance_uid": o["sop_instance_uid"]})
            rf.copies.append((bucket, o["object_key"], dest))
    return entries


def _manifests(rf: ReleaseFiles, release_id: str, protocol: str, pub: str, hold: str,
               released: Sequence[LumbarStudy], holdout: Sequence[LumbarStudy],
               pub_objects: list[dict], hold_objects: list[dict]) -> None:
    """Holdout manifest first (the public one names its hash); the same shape as a CXR release."""
    hold_manifest = {"release_id": release_id, "objects": hold_objects,
                     "files": {k: sha256_hex(v) for (b, k), v in sorted(rf.files.items()) if b == "holdout"}}
    hold_bytes = json.dumps(hold_manifest, indent=2, sort_keys=True).encode()
    rf.files[("holdout", f"{hold}/manifest.json")] = hold_bytes
    manifest = {
        "release_id": release_id, "manifest_version": MANIFEST_VERSION, "protocol": protocol,
        "layout": "rsna-2024-lumbar", "label_ids": list(CELL_IDS),
        "released": {"study_ids": sorted(s.study_id for s in released), "objects": pub_objects},
        "holdout": {"study_ids": sorted(s.study_id for s in holdout), "manifest_sha256": sha256_hex(hold_bytes)},
        "files": {k: sha256_hex(v) for (b, k), v in sorted(rf.files.items()) if b == "public"},
    }
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    rf.manifest_key, rf.manifest_sha256 = f"{pub}/manifest.json", sha256_hex(body)
    rf.files[("public", rf.manifest_key)] = body


def lumbar_card(release_id: str, protocol: str, plan: SelectionPlan, funnel: Mapping[str, int], rule: RuleConfig,
                agreement: Mapping, released: Sequence[LumbarStudy], holdout: Sequence[LumbarStudy],
                unmet: Sequence[str]) -> dict:
    """The dataset card: counts and grade prevalence per condition and split, never a study's grades."""
    return {
        "release_id": release_id, "protocol": protocol, "layout": "rsna-2024-lumbar",
        "versions": {"taxonomy": TAXONOMY_VERSION, "rule": f"{rule.rule}/{rule.version}",
                     "manifest": MANIFEST_VERSION, "metric": LUMBAR_METRIC_VERSION},
        "rule": rule.describe(), "plan": plan.model_dump(mode="json"),
        "funnel": {**funnel, "selected": len(released) + len(holdout), "released": len(released),
                   "holdout": len(holdout)},
        "counts": {"released": len(released), "holdout": len(holdout),
                   "patients": {"released": len({s.patient_id for s in released}),
                                "holdout": len({s.patient_id for s in holdout})}},
        "grade_prevalence": {"released": _prevalence(released), "holdout": _prevalence(holdout)},
        "agreement": {k: agreement.get(k) for k in ("studies", "mean_qwk", "qwk_by_condition",
                                                     "mean_point_distance_mm", "krippendorff_alpha_ordinal")},
        "unmet_quotas": list(unmet),
        "provenance": {"released": provenance_counts([s.provenance for s in released]),
                       "holdout": provenance_counts([s.provenance for s in holdout])},
        "deidentification": _deid_card_section(),
    }


def lumbar_provenance(row: Mapping, rule: RuleConfig) -> dict[str, str]:
    """A study's provenance: its graders and how many cells a curator set (when adjudicated)."""
    votes = row.get("votes") or []
    adjudicated_cells = sum(c.get("method") == "adjudicated" for c in row.get("cells") or ())
    tally = f"graded={len(votes)}" + (f";adjudicated_cells={adjudicated_cells}" if adjudicated_cells else "")
    return study_provenance(row, tally if votes else "", rule.rule, rule.version)


def _prevalence(studies: Sequence[LumbarStudy]) -> dict[str, dict[str, int]]:
    counts = {c.value: {g.value: 0 for g in Grade} for c in CONDITIONS}
    for s in studies:
        for cell, grade in s.grades.items():
            counts[cell_of(cell)[0].value][grade] += 1
    return counts


def _deid_card_section() -> dict[str, Any]:
    """services.common.deid's card section, imported when a card is built: deid brings pydicom
    (~0.6 s of CPU), and every service registers this protocol at start."""
    from services.common import deid

    return deid.card_section()
