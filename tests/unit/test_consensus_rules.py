"""The CXR consensus rule: at least two Agree all accepts the suggested labels."""

from __future__ import annotations

from itertools import product

import pytest

from services.common.contracts import Verdict
from services.common.protocols.kit.decision import CXR_RULE, CXR_RULE_VERSION, VoteView, decide_cxr, effective_labels

ALL, MOSTLY, DISAGREE = Verdict.AGREE_ALL, Verdict.AGREE_MOSTLY, Verdict.DISAGREE
SUGGESTED = ["pleural_effusion", "cardiomegaly"]


def vote(reader: str, verdict: Verdict, added=(), removed=()) -> VoteView:
    return VoteView(reader, verdict, frozenset(added), frozenset(removed))


def votes(*verdicts: Verdict) -> list[VoteView]:
    return [vote(f"R{i}", v) for i, v in enumerate(verdicts)]


def test_two_agree_all_accept_the_suggested_labels():
    decision = decide_cxr(votes(ALL, ALL, DISAGREE), SUGGESTED)
    assert decision.accepted
    assert decision.labels == ("cardiomegaly", "pleural_effusion")
    assert not decision.needs_adjudication
    assert (decision.rule, decision.rule_version) == (CXR_RULE, CXR_RULE_VERSION)
    assert "2 agree all" in decision.reason


def test_accepted_labels_are_the_suggestion_even_if_an_agreeing_reader_added_one():
    three = [vote("R0", ALL), vote("R1", ALL), vote("R2", MOSTLY, added={"fracture"})]
    assert decide_cxr(three, SUGGESTED).labels == ("cardiomegaly", "pleural_effusion")


@pytest.mark.parametrize("verdicts", list(product(Verdict, repeat=3)))
def test_accepted_exactly_when_at_least_two_readers_agree_all(verdicts):
    decision = decide_cxr(votes(*verdicts), SUGGESTED)
    agree_all = verdicts.count(ALL)
    at_least_mostly = agree_all + verdicts.count(MOSTLY)
    assert decision.accepted == (agree_all >= 2)
    assert decision.needs_adjudication == (agree_all < 2 and at_least_mostly >= 2)
    assert not (decision.accepted and decision.needs_adjudication)
    if not decision.accepted and not decision.needs_adjudication:
        assert decision.labels == ()


def test_a_mostly_majority_proposes_the_labelwise_majority_for_adjudication():
    three = [
        vote("R0", ALL),
        vote("R1", MOSTLY, added={"atelectasis"}, removed={"cardiomegaly"}),
        vote("R2", MOSTLY, added={"atelectasis", "fracture"}, removed={"cardiomegaly"}),
    ]
    decision = decide_cxr(three, SUGGESTED)
    assert not decision.accepted
    assert decision.needs_adjudication
    assert decision.labels == ("atelectasis", "pleural_effusion")


def test_a_disagree_majority_is_rejected():
    decision = decide_cxr(votes(ALL, DISAGREE, DISAGREE), SUGGESTED)
    assert not decision.accepted and not decision.needs_adjudication
    assert decision.labels == ()
    assert decision.reason.startswith("rejected")


def test_the_bar_is_configurable():
    assert not decide_cxr(votes(ALL, ALL, MOSTLY), SUGGESTED, min_agree_all=3).accepted
    assert decide_cxr(votes(ALL, MOSTLY, DISAGREE), SUGGESTED, min_agree_all=1).accepted


def test_an_extra_vote_is_counted():
    decision = decide_cxr(votes(ALL, MOSTLY, DISAGREE, ALL), SUGGESTED)
    assert decision.accepted


def test_deciding_before_all_votes_are_in_is_refused():
    with pytest.raises(ValueError, match="needs 3 votes, got 2"):
        decide_cxr(votes(ALL, ALL), SUGGESTED)


def test_two_votes_from_one_reader_are_refused():
    with pytest.raises(ValueError, match="R0"):
        decide_cxr([vote("R0", ALL), vote("R0", ALL), vote("R1", ALL)], SUGGESTED)


def test_effective_labels_apply_the_readers_corrections():
    correction = vote("R0", MOSTLY, added={"fracture"}, removed={"cardiomegaly"})
    assert effective_labels(correction, SUGGESTED) == {"pleural_effusion", "fracture"}
    assert effective_labels(vote("R1", ALL), SUGGESTED) == set(SUGGESTED)


def test_a_no_finding_suggestion_can_be_accepted_as_no_finding():
    decision = decide_cxr(votes(ALL, ALL, ALL), [])
    assert decision.accepted and decision.labels == ()
