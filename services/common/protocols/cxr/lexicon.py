"""Offline lexicon mapper: findings -> taxonomy labels.

The rule extractor already names the label it matched (`label_hint`); other extractors (an LLM
reading free text) may not, so a hintless finding is matched against the taxonomy's synonym
phrases. The mapper never invents a label: anything outside the taxonomy comes back as an
unmapped finding for the reviewers to see, which is how omissions stay visible.
"""

from __future__ import annotations

from services.common.contracts import Certainty, Finding, SuggestedLabel
from services.common.taxonomy import Taxonomy

PRESENT_CONFIDENCE = 0.95
UNCERTAIN_CONFIDENCE = 0.6


def map_findings(
    findings: list[Finding], taxonomy: Taxonomy
) -> tuple[list[SuggestedLabel], list[Finding]]:
    """Suggested labels in taxonomy order, and the findings that map to no label."""
    support: dict[str, list[Finding]] = {}
    unmapped: list[Finding] = []
    for finding in findings:
        label_ids = labels_for(finding, taxonomy)
        if not label_ids:
            unmapped.append(finding)
        for label_id in label_ids:
            support.setdefault(label_id, []).append(finding)
    suggested = [
        _suggest(label_id, support[label_id]) for label_id in taxonomy.label_ids if label_id in support
    ]
    return suggested, unmapped


def labels_for(finding: Finding, taxonomy: Taxonomy) -> list[str]:
    """The finding's hinted label when the taxonomy has it, else labels named by its text."""
    if finding.label_hint and finding.label_hint in taxonomy:
        return [finding.label_hint]
    return taxonomy.match_labels(finding.text)


def _suggest(label_id: str, findings: list[Finding]) -> SuggestedLabel:
    """Uncertain only when every supporting finding is hedged: one firm mention settles it.

    The confidence is the firmest supporting finding's: the extractor's own grade when it gives
    one ("probable" above "possible", a loose descriptor below both), else by certainty.
    """
    uncertain = all(f.certainty == Certainty.UNCERTAIN for f in findings)
    evidence = list(dict.fromkeys(f.evidence for f in findings if f.evidence))
    return SuggestedLabel(
        label_id=label_id,
        confidence=max(_confidence(f) for f in findings),
        uncertain=uncertain,
        evidence=evidence,
    )


def _confidence(finding: Finding) -> float:
    if finding.confidence is not None:
        return finding.confidence
    return UNCERTAIN_CONFIDENCE if finding.certainty == Certainty.UNCERTAIN else PRESENT_CONFIDENCE
