"""From accepted studies to the files of a release: selection, split, dataset card, manifest.

Pure and deterministic, so that the same accepted studies, plan (seed included), funnel figures
and agreement statistics give the same release byte for byte; `handlers` only fetches the rows
and writes the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.common.contracts import SelectionPlan, Verdict
from services.common.protocols.cxr import scoring as scoring_cxr
from services.common.protocols.cxr.reporting import REPORT_VERSION
from services.common.protocols.kit.release import (
    MANIFEST_VERSION,
    ReleaseFiles,
    ReleaseStudy,
    build_release,
    prevalence,
    provenance_counts,
    study_provenance,
)
from services.common.protocols.kit.rule_config import RuleConfig
from services.common.protocols.kit.selection import (
    AcceptedStudy,
    BenchmarkSplit,
    composition,
    image_keys,
    plan_composition,
    select_and_split,
)
from services.common.taxonomy import Taxonomy

# Uncertainty the agreement report attaches (patient-bootstrap CIs, Krippendorff's alpha), copied to
# the card when present so that a card made from an older report still builds.
RELIABILITY_KEYS = ("fleiss_kappa_ci95", "krippendorff_alpha", "krippendorff_alpha_ci95", "bootstrap")


@dataclass(frozen=True)
class ComposedRelease:
    files: ReleaseFiles
    released: list[ReleaseStudy]
    holdout: list[ReleaseStudy]


def _select(studies: Mapping[str, ReleaseStudy], plan: SelectionPlan, taxonomy: Taxonomy) -> BenchmarkSplit:
    return select_and_split([AcceptedStudy(s.study_id, s.patient_id, s.labels, image_keys(s.objects))
                             for s in studies.values()], plan, taxonomy.label_ids)


def _studies(rows: Sequence[Mapping], provenance: Callable[[Mapping], Mapping[str, str]]) -> dict[str, ReleaseStudy]:
    return {r["study_id"]: ReleaseStudy(r["study_id"], r["patient_id"], frozenset(r["labels"]),
                                        tuple(r["objects"]), provenance(r)) for r in rows}


def release_copies(release_id: str, protocol: str, rows: Sequence[Mapping], plan: SelectionPlan,
                   taxonomy: Taxonomy) -> list[tuple[str, str, str]]:
    """The DICOM copies `compose_release` lays out for these rows and plan: the same selection and
    layout, without the agreement report the dataset card needs (which decides neither). Raises
    ValueError as it does."""
    studies = _studies(rows, lambda _: {})
    split = _select(studies, plan, taxonomy)
    return build_release(release_id, protocol=protocol, released=[studies[sid] for sid in split.released],
                         holdout=[studies[sid] for sid in split.holdout], label_ids=taxonomy.label_ids,
                         card={}).copies


def compose_release(release_id: str, protocol: str, rows: Sequence[Mapping], plan: SelectionPlan,
                    funnel: Mapping[str, int], taxonomy: Taxonomy, rule: RuleConfig,
                    agreement: Mapping) -> ComposedRelease:
    """Select and split `rows` (accepted studies) and lay out every file of the release."""
    studies = _studies(rows, lambda r: cxr_provenance(r, rule))
    split = _select(studies, plan, taxonomy)
    released = [studies[sid] for sid in split.released]
    holdout = [studies[sid] for sid in split.holdout]
    card = dataset_card(release_id, protocol, plan, funnel, taxonomy, rule, agreement, released, holdout,
                        split.unmet)
    files = build_release(release_id, protocol=protocol, released=released, holdout=holdout,
                          label_ids=taxonomy.label_ids, card=card)
    return ComposedRelease(files, released, holdout)


def dataset_card(release_id: str, protocol: str, plan: SelectionPlan, funnel: Mapping[str, int],
                 taxonomy: Taxonomy, rule: RuleConfig, agreement: Mapping, released: Sequence[ReleaseStudy],
                 holdout: Sequence[ReleaseStudy], unmet: Sequence[str]) -> dict:
    """What a reader of the benchmark needs to trust it. Holdout figures are counts, never ids
    with labels: per-split prevalence is public by design, which studies are positive is not."""
    return {
        "release_id": release_id, "protocol": protocol,
        "versions": {"taxonomy": taxonomy.version, "rule": f"{rule.rule}/{rule.version}",
                     "manifest": MANIFEST_VERSION, "agreement_report": REPORT_VERSION,
                     "metric": scoring_cxr.METRIC_VERSION},
        "taxonomy_version": taxonomy.version, "rule": rule.describe(),
        "plan": plan.model_dump(mode="json"),
        "funnel": {**funnel, "selected": len(released) + len(holdout), "released": len(released),
                   "holdout": len(holdout)},
        "counts": {"released": len(released), "holdout": len(holdout),
                   "patients": {"released": len({s.patient_id for s in released}),
                                "holdout": len({s.patient_id for s in holdout})}},
        "prevalence": {"released": prevalence(released, taxonomy.label_ids),
                       "holdout": prevalence(holdout, taxonomy.label_ids)},
        "agreement": {"fleiss_kappa": agreement["fleiss_kappa"], "verdict_shares": agreement["verdict_shares"],
                      "studies": agreement["studies"],
                      **{k: agreement[k] for k in RELIABILITY_KEYS if k in agreement}},
        "composition": {
            "plan": plan_composition(plan, taxonomy.label_ids, len(released) + len(holdout)),
            "achieved": composition([*released, *holdout], taxonomy.label_ids),
            "released": composition(released, taxonomy.label_ids),
            "holdout": composition(holdout, taxonomy.label_ids),
        },
        "unmet_quotas": list(unmet),
        # How each selected study's labels were decided: by the rule, or by a curator's adjudication.
        "provenance": {"released": provenance_counts([s.provenance for s in released]),
                       "holdout": provenance_counts([s.provenance for s in holdout])},
        "deidentification": _deid_card_section(),
    }


def cxr_provenance(row: Mapping, rule: RuleConfig) -> dict[str, str]:
    """A study's provenance with its verdict tally (from the row's counted `votes`, when given)."""
    verdicts = [v["verdict"] for v in row.get("votes") or []]
    tally = ";".join(f"{v.value}={verdicts.count(v.value)}" for v in Verdict)
    return study_provenance(row, tally if verdicts else "", rule.rule, rule.version)


def _deid_card_section() -> dict[str, Any]:
    """services.common.deid's card section, imported when a card is built: deid brings pydicom
    (~0.6 s of CPU), and every service registers this protocol at start."""
    from services.common import deid

    return deid.card_section()
