"""What each CXR verdict means (issue 12 §2): the rule, the taxonomy's numbers, the gateway hook."""

from __future__ import annotations

import asyncio

import pytest

from services.common import protocols
from services.common.contracts import Verdict
from services.common.protocols import JudgementRejected, ReviewContext
from services.common.protocols.cxr import correction_flags
from services.common.protocols.cxr.verdicts import VerdictRules, check_verdict

DEFAULT = VerdictRules()


@pytest.mark.parametrize(("verdict", "corrections", "comment"), [
    (Verdict.AGREE_ALL, 0, ""), (Verdict.AGREE_MOSTLY, 1, ""), (Verdict.DISAGREE, 2, ""),
    (Verdict.DISAGREE, 5, ""), (Verdict.DISAGREE, 0, "motion artefact, not diagnostic"),
    (Verdict.DISAGREE, 1, "wrong side"),
])
def test_votes_that_fit_their_verdict_pass(verdict, corrections, comment):
    check_verdict(verdict, corrections, comment, DEFAULT)


@pytest.mark.parametrize(("verdict", "corrections", "comment", "says"), [
    (Verdict.AGREE_ALL, 1, "", "agree_all means no correction; this vote has 1 correction"),
    (Verdict.AGREE_MOSTLY, 0, "", "agree_mostly means exactly 1 correction; this vote has 0 corrections"),
    (Verdict.AGREE_MOSTLY, 2, "a reason does not help", "exactly 1 correction"),
    (Verdict.DISAGREE, 0, "", "more than 1 correction, or a stated reason (comment); this vote has 0"),
    (Verdict.DISAGREE, 1, "   ", "and no comment"),
])
def test_votes_that_contradict_their_verdict_are_refused_saying_why(verdict, corrections, comment, says):
    with pytest.raises(JudgementRejected) as err:
        check_verdict(verdict, corrections, comment, DEFAULT)
    assert says in err.value.detail
    assert err.value.extra["corrections"] == corrections and err.value.extra["verdict"] == verdict.value


def test_the_numbers_come_from_configuration():
    rules = VerdictRules.from_extra({"verdicts": {"agree_mostly_corrections": 2, "disagree_with_reason": False}})
    check_verdict(Verdict.AGREE_MOSTLY, 2, "", rules)
    with pytest.raises(JudgementRejected):
        check_verdict(Verdict.AGREE_MOSTLY, 1, "", rules)
    with pytest.raises(JudgementRejected):  # no reason may stand in for corrections any more
        check_verdict(Verdict.DISAGREE, 2, "I just disagree", rules)
    check_verdict(Verdict.DISAGREE, 3, "", rules)
    assert VerdictRules.from_extra({}) == DEFAULT


@pytest.mark.parametrize("extra", [{"verdicts": {"agree_mostly_corrections": 0}},
                                   {"verdicts": {"agree_mostly": 1}}])
def test_a_bad_verdict_configuration_is_named(extra):
    with pytest.raises(ValueError, match="verdicts"):
        VerdictRules.from_extra(extra)


def test_the_cxr_taxonomy_defines_the_verdicts():
    assert protocols.get("cxr-label-verification").verdict_rules() == VerdictRules(1, True)


def _read(fields: dict, comment: str = ""):
    async def no_instances():
        return set()
    context = ReviewContext("S1", [{"label_id": "pulmonary_edema", "uncertain": True}], [], confirm=True,
                            instances=no_instances, comment=comment)
    return asyncio.run(protocols.get("cxr-label-verification").read_judgement(fields, context))


def test_the_gateway_hook_enforces_the_verdicts_and_reads_the_comment():
    with pytest.raises(JudgementRejected, match="agree_mostly means exactly 1"):
        _read({"verdict": "agree_mostly"})
    with pytest.raises(JudgementRejected, match="disagree means"):
        _read({"verdict": "disagree", "added_labels": ["cardiomegaly"]})
    vote, _ = _read({"verdict": "disagree", "added_labels": ["cardiomegaly"]}, comment="not a frontal view")
    assert vote.verdict == Verdict.DISAGREE
    vote, _ = _read({"verdict": "agree_mostly", "removed_labels": ["pulmonary_edema"]})
    assert vote.removed_labels == ["pulmonary_edema"]


def test_every_readers_corrections_become_flags():
    votes = [{"reader_id": "r1", "verdict": "agree_all", "added_labels": [], "removed_labels": []},
             {"reader_id": "r2", "verdict": "agree_all", "added_labels": [], "removed_labels": []},
             {"reader_id": "r3", "verdict": "disagree", "added_labels": ["pneumothorax", "edema"],
              "removed_labels": ["effusion"]}]
    assert correction_flags(votes) == ["correction: r3 (disagree) added edema, pneumothorax; removed effusion"]
    cxr = protocols.get("cxr-label-verification")
    assert cxr.review_flags(True, votes) == correction_flags(votes)
    assert cxr.review_flags(False, votes) == []  # a rejected or held study is already a curator's
