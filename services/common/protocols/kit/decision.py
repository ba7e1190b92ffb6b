"""Consensus rules: from a study's reader votes to a decision about its benchmark labels.

Pure logic; the consensus service calls it once a study has its K votes and records the
decision with the rule name and version, so a later rule change never rewrites old decisions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.contracts import Verdict

CXR_RULE = "cxr-agree-all-majority"
CXR_RULE_VERSION = "1"


@dataclass(frozen=True)
class VoteView:
    """What a rule needs of a vote: who, the verdict, and the reader's corrections."""

    reader_id: str
    verdict: Verdict
    added_labels: frozenset[str] = frozenset()
    removed_labels: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    accepted: bool
    labels: tuple[str, ...]  # sorted; the labels that enter the benchmark if accepted
    rule: str
    rule_version: str
    needs_adjudication: bool
    reason: str


def effective_labels(vote: VoteView, suggested: Sequence[str]) -> frozenset[str]:
    """The label set this reader stands behind: the suggestion with their corrections applied."""
    return (frozenset(suggested) - vote.removed_labels) | vote.added_labels


def decide_cxr(
    votes: Sequence[VoteView],
    suggested: Sequence[str],
    *,
    min_agree_all: int = 2,
    readers_per_study: int = 3,
) -> Decision:
    """REVEAL-CXR rule: accepted with the suggested labels iff >= `min_agree_all` readers agree all.

    A study that misses that bar but where a majority agreed at least mostly is close: its
    label-wise majority of the readers' corrected label sets is proposed for adjudication
    instead of being thrown away, which keeps omissions down. Anything else is rejected.
    """
    _check_votes(votes, readers_per_study, min_agree_all)
    verdicts = Counter(v.verdict for v in votes)
    agree_all, n = verdicts[Verdict.AGREE_ALL], len(votes)
    at_least_mostly = agree_all + verdicts[Verdict.AGREE_MOSTLY]
    tally = (
        f"{agree_all} agree all, {verdicts[Verdict.AGREE_MOSTLY]} agree mostly, "
        f"{verdicts[Verdict.DISAGREE]} disagree of {n} votes"
    )
    if agree_all >= min_agree_all:
        return _decision(True, sorted(set(suggested)), False, f"accepted: {tally}")
    if 2 * at_least_mostly > n:
        labels = _labelwise_majority(votes, suggested)
        return _decision(False, labels, True, f"adjudicate label-wise majority: {tally}")
    return _decision(False, [], False, f"rejected: {tally}")


def _check_votes(votes: Sequence[VoteView], readers_per_study: int, min_agree_all: int) -> None:
    if min_agree_all < 1:
        raise ValueError(f"min_agree_all must be at least 1, got {min_agree_all}")
    if len(votes) < readers_per_study:
        raise ValueError(f"decision needs {readers_per_study} votes, got {len(votes)}")
    readers = Counter(v.reader_id for v in votes)
    twice = sorted(r for r, k in readers.items() if k > 1)
    if twice:
        raise ValueError(f"more than one vote from reader(s) {', '.join(twice)}")


def _labelwise_majority(votes: Sequence[VoteView], suggested: Sequence[str]) -> list[str]:
    """Labels in more than half of the readers' effective label sets."""
    counts = Counter(label for v in votes for label in effective_labels(v, suggested))
    return sorted(label for label, k in counts.items() if 2 * k > len(votes))


def _decision(accepted: bool, labels: list[str], adjudicate: bool, reason: str) -> Decision:
    return Decision(accepted, tuple(labels), CXR_RULE, CXR_RULE_VERSION, adjudicate, reason)
