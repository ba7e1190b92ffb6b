"""Consensus rules come from a versioned file, and every decision carries that version."""

from __future__ import annotations

import pytest

from services.common.contracts import Verdict
from services.common.protocols.kit.decision import VoteView
from services.common.protocols.kit.rule_config import RuleConfigError, decide, load_rules, rule_for

CXR = "cxr-label-verification"
ALL, MOSTLY = Verdict.AGREE_ALL, Verdict.AGREE_MOSTLY


def three(*verdicts):
    return [VoteView(f"R{i}", v) for i, v in enumerate(verdicts)]


def test_the_shipped_cxr_rule_is_two_of_three_agree_all_version_one():
    rule = rule_for(CXR)
    assert (rule.rule, rule.version, rule.min_agree_all, rule.readers_per_study) == (
        "cxr-agree-all-majority", "1", 2, 3)


def test_a_decision_records_the_configured_rule_and_version(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(f"{CXR}:\n  rule: cxr-agree-all-majority\n  version: '2-strict'\n  min_agree_all: 3\n")
    strict = rule_for(CXR, str(path))
    decision = decide(strict, three(ALL, ALL, MOSTLY), ["cardiomegaly"])
    assert not decision.accepted and decision.rule_version == "2-strict"
    assert decide(rule_for(CXR), three(ALL, ALL, MOSTLY), ["cardiomegaly"]).accepted


def test_an_unknown_rule_or_protocol_is_refused_by_name(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(f"{CXR}:\n  rule: best-guess\n  version: '1'\n")
    with pytest.raises(RuleConfigError, match="best-guess"):
        load_rules(str(path))
    only_cxr = tmp_path / "only_cxr.yaml"
    only_cxr.write_text(f"{CXR}:\n  rule: cxr-agree-all-majority\n  version: '1'\n")
    with pytest.raises(RuleConfigError, match="lumbar-grading"):
        rule_for("lumbar-grading", str(only_cxr))
