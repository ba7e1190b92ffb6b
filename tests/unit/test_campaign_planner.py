"""`radcurate plan`: a campaign simulated offline with the services' own sampling, consensus and
selection, and the truth audit it (and `radcurate report --truth`) reports."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from radcurate import campaign
from radcurate.campaign import CampaignPlan, run_campaign, synth_pool
from radcurate.cli import app
from radcurate.simulate import ReaderModel
from radcurate.truth_audit import AuditedStudy, audit
from services.common.contracts import SelectionPlan, Verdict

AA, AM, D = Verdict.AGREE_ALL, Verdict.AGREE_MOSTLY, Verdict.DISAGREE
LABELS = ["cardiomegaly", "pneumothorax"]
PERFECT = ReaderModel(sensitivity=1, subtle_sensitivity=1, false_positive_rate=0, automation_bias=0,
                      automation_bias_subtle=0, unsuggested_factor=1)
SMALL = {"sample_size": 150, "selection": SelectionPlan(target_size=40, min_per_label=1)}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return synth_pool(600, 0, tmp_path_factory.mktemp("cache"), workers=1)


def test_the_audit_counts_false_positives_negatives_and_what_stricter_rules_catch():
    studies = [
        AuditedStudy("a", "released", frozenset({"cardiomegaly"}), frozenset(), (AA, AA, AM), True),  # FP
        AuditedStudy("b", "released", frozenset(), frozenset({"pneumothorax"}), (AA, AA, AA), False),  # FN
        AuditedStudy("c", "released", frozenset({"cardiomegaly"}), frozenset({"cardiomegaly"}), (AA, AA, D), True),
        AuditedStudy("d", "holdout", frozenset({"pneumothorax"}), frozenset({"pneumothorax"}), (AA, AA, AA), False),
    ]
    result = audit(studies, LABELS)
    assert result["per_label"]["released"] == {"cardiomegaly": {"fp": 1, "fn": 0}, "pneumothorax": {"fp": 0, "fn": 1}}
    assert result["studies"]["released"] == {"total": 3, "with_error": 2, "label_errors": 2}
    assert result["caught"]["released"] == {"by_unanimous_rule": 1, "correct_lost_to_unanimous_rule": 1,
                                            "by_fourth_reader": 1, "correct_flagged_by_fourth_reader": 1}
    assert result["studies"]["holdout"]["with_error"] == 0


def test_a_stricter_rule_accepts_a_subset_and_corrections_a_superset_of_the_same_reads(pool):
    """Reads depend on the seed only, so the three rules decide the very same votes."""
    accepted = {}
    for rule in campaign.RULES:
        outcome = run_campaign(pool, CampaignPlan(rule=rule, **SMALL), seed=3)
        accepted[rule] = outcome.accepted
        assert outcome.sampled == 150 and outcome.reader_hours > 0
    assert accepted["agree-all-3"] < accepted["agree-all-2"] < accepted["majority-with-corrections"]


def test_perfect_readers_leave_no_label_error_and_agree_completely(pool):
    outcome = run_campaign(pool, CampaignPlan(model=PERFECT, **SMALL), seed=1)
    assert outcome.selected > 0
    assert outcome.audit["studies"]["released"]["with_error"] == outcome.audit["studies"]["holdout"]["with_error"] == 0
    assert all(k is None or k == pytest.approx(1.0) for k in outcome.kappa.values())


def test_automation_bias_puts_label_errors_into_the_benchmark(pool):
    def errors(bias: float) -> int:
        model = ReaderModel(automation_bias=bias, automation_bias_subtle=bias)
        o = run_campaign(pool, CampaignPlan(model=model, **SMALL), seed=2)
        return sum(o.audit["studies"][s]["label_errors"] for s in ("released", "holdout"))

    assert errors(0.9) > errors(0.0)


def test_the_planner_calls_the_services_functions_not_copies(pool, monkeypatch):
    from services.common.protocols import cxr
    from services.common.protocols.cxr import reporting
    from services.common.protocols.kit import rule_config, sampling, selection
    from services.sampler import assignment

    assert campaign.draw_sample is sampling.draw_sample and campaign.assign_readers is assignment.assign_readers
    assert campaign.decide is rule_config.decide and campaign.select_and_split is selection.select_and_split
    assert campaign.candidate_from is cxr.candidate_from and campaign.kappa_per_label is reporting.kappa_per_label
    calls = []
    for name in ("draw_sample", "assign_readers", "decide", "select_and_split"):
        real = getattr(campaign, name)
        monkeypatch.setattr(campaign, name,
                            lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    run_campaign(pool, CampaignPlan(**SMALL), seed=0)
    assert {"draw_sample", "assign_readers", "decide", "select_and_split"} <= set(calls)


def test_same_seed_same_campaign(pool):
    a = run_campaign(pool, CampaignPlan(**SMALL), seed=5)
    b = run_campaign(pool, CampaignPlan(**SMALL), seed=5)
    assert (a.accepted, a.audit, a.kappa, a.reader_hours) == (b.accepted, b.audit, b.kappa, b.reader_hours)


def test_a_plan_that_cannot_run_is_refused():
    with pytest.raises(ValueError, match="unknown rule"):
        CampaignPlan(rule="unanimous-ish")
    with pytest.raises(ValueError, match="needs 3 readers"):
        CampaignPlan(rule="agree-all-3", readers_per_study=2)


def test_the_command_prints_every_rule_with_ranges_over_seeds(tmp_path):
    result = CliRunner().invoke(app, ["plan", "--pool", "400", "--sample", "100", "--target", "30", "--seeds", "2",
                                      "--compare-rules", "--json", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert set(body["results"]) == set(campaign.RULES)
    accepted = body["results"]["agree-all-2"]["summary"]["accepted"]
    assert accepted["low"] <= accepted["mean"] <= accepted["high"]


def test_the_command_refuses_an_unknown_rule_with_a_message(tmp_path):
    result = CliRunner().invoke(app, ["plan", "--rule", "nope", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2 and "unknown rule 'nope'" in result.output
