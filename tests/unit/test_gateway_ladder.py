"""The evaluation policy against the two attacks of issue 11 §10, with the real cxr scorer.

Without the policy both attacks work (the full results differ with the hidden labels); with it,
what a submission shows is identical whichever labels are hidden: nothing beyond the ladder's
resolution and margin comes out."""

from __future__ import annotations

import random

from services.common import protocols
from services.common.contracts import Protocol
from services.gateway import ladder

CXR = protocols.get(Protocol.CXR)
LABELS = list(CXR.taxonomy().label_ids)
STUDIES = [f"s-{i:03d}" for i in range(200)]
POLICY = ladder.default_policy(True, per_day=5, lifetime=50)


def _truth(seed: int, prevalence: float) -> dict[str, list[str]]:
    rng = random.Random(seed)
    return {s: [label for label in LABELS if rng.random() < prevalence] for s in STUDIES}


def _csv(values: dict[str, dict[str, float]]) -> str:
    lines = [",".join(["study_id", *LABELS])]
    lines += [",".join([s, *(f"{values[s][label]:.6f}" for label in LABELS)]) for s in STUDIES]
    return "\n".join(lines) + "\n"


def _score(text: str, truth: dict) -> dict:
    release = {"release_id": "r", "manifest_sha256": "0" * 64, "holdout": STUDIES, "protocol": Protocol.CXR}
    return CXR.score_submission(text, release, truth, 20)


def _answers(submissions: list[str], truth: dict) -> list[dict]:
    """What a team is shown for each of its submissions in turn (the gateway's ladder)."""
    shown: list[dict] = []
    for text in submissions:
        shown.append(ladder.publish(POLICY, _score(text, truth), ladder.best_published(shown)))
    return shown


def _model(truth: dict, seed: int) -> dict[str, dict[str, float]]:
    """A decent model: noisy scores that lean toward the truth."""
    rng = random.Random(seed)
    return {s: {label: min(1.0, max(0.0, (0.65 if label in truth[s] else 0.35) + rng.gauss(0, 0.2)))
                for label in LABELS} for s in STUDIES}


def test_all_ones_reveals_no_prevalence():
    all_ones = _csv({s: dict.fromkeys(LABELS, 1.0) for s in STUDIES})
    rare, common = _truth(1, 0.1), _truth(1, 0.4)
    # the channel the policy closes: the full result reads the prevalence off F1/specificity
    assert _score(all_ones, rare)["per_label"] != _score(all_ones, common)["per_label"]
    assert _answers([all_ones], rare) == _answers([all_ones], common)
    assert ladder.headline(_answers([all_ones], rare)[0]) == 0.5
    assert set(_answers([all_ones], rare)[0]) == {"policy", "resolution", "margin", "improved", "metric_version",
                                                  "macro"}


def test_one_study_probes_reveal_no_label():
    base_truth = _truth(2, 0.25)
    model = _model(base_truth, 3)
    baseline = _csv(model)
    for k, study in enumerate(STUDIES[:20]):
        label = LABELS[k % len(LABELS)]
        has, lacks = ({**base_truth, study: sorted({*base_truth[study], label})},
                      {**base_truth, study: sorted(set(base_truth[study]) - {label})})
        probe = _csv({**model, study: {**model[study], label: 1.0 - model[study][label]}})
        # the channel the policy closes: the probe's full result differs with the hidden label
        assert (_score(probe, has)["per_label"][label] != _score(probe, lacks)["per_label"][label])
        shown_has, shown_lacks = _answers([baseline, probe], has), _answers([baseline, probe], lacks)
        assert shown_has == shown_lacks, (study, label)
        assert shown_has[1]["improved"] is False and ladder.headline(shown_has[1]) == ladder.headline(shown_has[0])


def test_the_ladder_shows_only_real_improvements_rounded():
    truth = _truth(4, 0.25)
    weak, strong = _csv(_model(truth, 5)), _csv({s: {label: 0.9 if label in truth[s] else 0.1 for label in LABELS}
                                                  for s in STUDIES})
    first, second, third = _answers([weak, strong, weak], truth)
    assert first["improved"] and second["improved"] and not third["improved"]
    assert second["macro"]["auroc"] == 1.0 and third["macro"]["auroc"] == 1.0
    assert first["macro"]["auroc"] == round(first["macro"]["auroc"], 2) < 1.0


def test_lower_is_better_metrics_climb_down():
    policy = ladder.default_policy(False, per_day=5, lifetime=50)
    first = ladder.publish(policy, {"score": 0.8123}, None)
    assert first["score"] == 0.81 and first["improved"]
    assert ladder.publish(policy, {"score": 0.805}, 0.81)["score"] == 0.81  # within the margin: the old value
    assert ladder.publish(policy, {"score": 0.7}, 0.81)["score"] == 0.7


def test_a_plugin_protocols_headline_is_its_first_float():
    shown = ladder.publish(POLICY, {"metric_version": "ptx/1", "accuracy": 0.8765, "studies": 40}, None)
    assert shown["accuracy"] == 0.88 and "studies" not in shown
