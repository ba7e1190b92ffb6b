"""A release composed from the same accepted studies, plan and seed is the same, byte for byte;
its card carries the agreement statistics, per-split prevalence, funnel and versions."""

from __future__ import annotations

import json
import random

from services.common.contracts import SelectionPlan
from services.common.objectstore import sha256_hex
from services.common.protocols.cxr.benchmark import compose_release
from services.common.protocols.kit.rule_config import rule_for
from services.common.taxonomy import load_taxonomy

TAXONOMY = load_taxonomy("cxr")
RULE = rule_for("cxr-label-verification")
AGREEMENT = {"fleiss_kappa": {label: 0.5 for label in TAXONOMY.label_ids},
             "verdict_shares": {"overall": {"agree_all": 0.6, "agree_mostly": 0.3, "disagree": 0.1}},
             "studies": {"decided": 90, "accepted": 60, "in_kappa": 90, "votes": 270}}


def accepted_rows(n: int = 60, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        sid = f"S{i:03d}"
        obj = {"object_key": f"dicom/{sid}", "sha256": sha256_hex(sid.encode()), "sop_instance_uid": f"1.{i}",
               "series_instance_uid": f"2.{i}", "instance_number": 1}
        rows.append({"study_id": sid, "patient_id": f"P{i // 2}",
                     "labels": rng.sample(TAXONOMY.label_ids, rng.randint(0, 3)),
                     "objects": [obj]})
    return rows


def compose(seed: int = 4, rows=None):
    plan = SelectionPlan(target_size=30, min_per_label=2, seed=seed)
    return compose_release("r1", "cxr-label-verification", rows or accepted_rows(), plan,
                           {"ingested": 300, "accepted": 60}, TAXONOMY, RULE, AGREEMENT)


def test_same_inputs_and_seed_give_the_same_release_byte_for_byte():
    a, b = compose(), compose(rows=list(reversed(accepted_rows())))
    assert a.files.files == b.files.files and a.files.copies == b.files.copies
    assert a.files.manifest_sha256 == b.files.manifest_sha256


def test_another_seed_gives_another_split():
    assert compose(seed=4).files.manifest_sha256 != compose(seed=5).files.manifest_sha256


def test_the_card_has_agreement_prevalence_per_split_funnel_and_versions():
    c = compose()
    card = json.loads(c.files.files[("public", "releases/r1/dataset_card.json")])
    assert card["agreement"]["fleiss_kappa"] == AGREEMENT["fleiss_kappa"]
    assert set(card["prevalence"]) == {"released", "holdout"}
    assert sum(card["prevalence"]["holdout"].values()) == sum(len(s.labels) for s in c.holdout)
    assert card["funnel"]["selected"] == 30 and card["funnel"]["ingested"] == 300
    assert card["versions"]["taxonomy"] == TAXONOMY.version and card["versions"]["rule"] == "cxr-agree-all-majority/1"
    assert card["rule"]["min_agree_all"] == 2
    assert card["deidentification"]["options"] == ["Basic Application Confidentiality Profile",
                                                   "Clean Descriptors Option",
                                                   "Retain Longitudinal Temporal Information Modified Dates Option"]


def test_no_patient_is_on_both_sides_and_holdout_labels_stay_in_the_holdout_bucket():
    c = compose()
    assert not {s.patient_id for s in c.released} & {s.patient_id for s in c.holdout}
    public = b"".join(v for (bucket, _), v in c.files.files.items() if bucket == "public")
    holdout_csv = c.files.files[("holdout", "releases/r1/holdout/labels.csv")].decode().splitlines()
    assert all(line.encode() not in public for line in holdout_csv[1:])
    assert all(kind == "holdout" for kind, _, dst in c.files.copies if "/holdout/" in dst)
    assert {kind for kind, _, _ in c.files.copies} == {"public", "holdout"}


def test_the_card_shows_the_composition_achieved_against_the_plan():
    c = compose()
    card = json.loads(c.files.files[("public", "releases/r1/dataset_card.json")])
    comp = card["composition"]
    assert comp["plan"]["groups"] == {"normal": 3, "single_label": 8, "multi_label": 19}  # 10 % / 25 % of 30
    chosen = [*c.released, *c.holdout]
    assert comp["achieved"]["groups"]["normal"] == sum(not s.labels for s in chosen)
    assert sum(comp["achieved"]["labels_per_study"].values()) == 30
    a, b = TAXONOMY.label_ids[:2]
    assert comp["achieved"]["co_occurrence"][a][b] == sum(a in s.labels and b in s.labels for s in chosen)
    assert comp["released"]["studies"] + comp["holdout"]["studies"] == 30


def test_the_card_carries_kappa_intervals_and_alpha_when_the_report_has_them():
    agreement = {**AGREEMENT, "fleiss_kappa_ci95": {x: (0.4, 0.6) for x in TAXONOMY.label_ids},
                 "krippendorff_alpha": {x: 0.51 for x in TAXONOMY.label_ids}}
    c = compose_release("r1", "cxr-label-verification", accepted_rows(), SelectionPlan(target_size=30, seed=4),
                        {}, TAXONOMY, RULE, agreement)
    card = json.loads(c.files.files[("public", "releases/r1/dataset_card.json")])
    assert card["agreement"]["fleiss_kappa_ci95"][TAXONOMY.label_ids[0]] == [0.4, 0.6]
    assert card["agreement"]["krippendorff_alpha"][TAXONOMY.label_ids[0]] == 0.51


def test_the_copies_known_before_the_agreement_report_are_the_ones_the_release_lays_out():
    """The consensus service checks and copies these beside the agreement report, then copies
    whatever compose lays out beyond them: the two must be the same for every plan and seed."""
    from services.common.protocols.cxr import PROTOCOL

    for seed in range(6):
        rows = accepted_rows(n=40 + 7 * seed, seed=seed)
        for extra_object in (False, True):
            if extra_object:  # a study with two objects: both are copied
                rows[0] = {**rows[0], "objects": [*rows[0]["objects"], {**rows[0]["objects"][0],
                           "object_key": "dicom/S000-b", "sop_instance_uid": "1.0.2", "instance_number": 2}]}
            plan = SelectionPlan(target_size=20, min_per_label=1, seed=seed)
            composed = PROTOCOL.compose_release("r1", rows, plan, {}, RULE, AGREEMENT)
            assert composed.files.copies and PROTOCOL.release_copies("r1", rows, plan) == composed.files.copies
            assert {kind for kind, _, _ in composed.files.copies} == {"public", "holdout"}


def test_the_card_agreement_a_release_waits_for_gives_the_card_the_whole_report_gives():
    """After the last decision a release waits only for `card_agreement` (no AI versus expert, no
    provenance read): the same figures as the whole report's, so the same release byte for byte."""
    from services.common.protocols.cxr import PROTOCOL
    from tests.unit.test_consensus_reporting import synthetic

    labels = list(TAXONOMY.label_ids[:4])
    for seed in range(3):
        studies, votes = synthetic(seed, n=80)
        studies = [{**s, "patient_id": f"P{i // 2}", "suggested": [labels[j % 4] for j in range(i % 3)]}
                   for i, s in enumerate(studies)]
        lean = [{k: v for k, v in s.items() if k not in ("extraction", "mapping", "objects")} for s in studies]
        full, card = PROTOCOL.agreement_report(studies, votes), PROTOCOL.card_agreement(lean, votes)
        assert PROTOCOL.card_agreement_reads_provenance is False
        assert card == {k: v for k, v in full.items() if k not in ("readers", "ai_vs_expert")}
        assert "ai_vs_expert" not in card and card["krippendorff_alpha_ci95"]
        plan = SelectionPlan(target_size=30, min_per_label=0, seed=seed)
        rows = accepted_rows(seed=seed)
        from_card = PROTOCOL.compose_release("r1", rows, plan, {"ingested": 300}, RULE, card)
        from_full = PROTOCOL.compose_release("r1", rows, plan, {"ingested": 300}, RULE, full)
        assert from_card.files.files == from_full.files.files
        assert from_card.files.manifest_sha256 == from_full.files.manifest_sha256
