"""What each CXR verdict means, so that a vote says what it claims.

*Agree all* is the suggestion as it stands: no correction. *Agree mostly* is the suggestion with
exactly `agree_mostly_corrections` corrections (one, by default; a correction is one added or one
removed label). *Disagree* is more corrections than that, or fewer with a stated reason (the
vote's comment: the reader may reject the study for something no label names). A verdict whose
corrections do not fit is refused at the gateway rather than counted as agreement it is not.

The numbers live in the taxonomy file (`extra.verdicts`), next to the labels they count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.common.contracts import Verdict
from services.common.protocols import JudgementRejected


@dataclass(frozen=True)
class VerdictRules:
    """How many corrections each verdict carries."""

    agree_mostly_corrections: int = 1
    disagree_with_reason: bool = True  # a comment may stand in for the corrections a disagree lacks

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> VerdictRules:
        """The rules from a taxonomy's `extra.verdicts` (defaults where absent), checked."""
        raw = dict(extra.get("verdicts") or {})
        unknown = sorted(set(raw) - {"agree_mostly_corrections", "disagree_with_reason"})
        if unknown:
            raise ValueError(f"verdicts: unknown key(s) {', '.join(unknown)}")
        rules = cls(**raw)
        if not isinstance(rules.agree_mostly_corrections, int) or rules.agree_mostly_corrections < 1:
            raise ValueError(f"verdicts.agree_mostly_corrections must be an integer >= 1, "
                             f"got {rules.agree_mostly_corrections!r}")
        return rules

    def describe(self) -> dict[str, str]:
        """Each verdict's meaning in words (for a problem's detail and the dataset card)."""
        n = self.agree_mostly_corrections
        return {Verdict.AGREE_ALL.value: "no correction",
                Verdict.AGREE_MOSTLY.value: f"exactly {n} correction{'s' if n > 1 else ''}",
                Verdict.DISAGREE.value: f"more than {n} correction{'s' if n > 1 else ''}"
                                        + (", or a stated reason (comment)" if self.disagree_with_reason else "")}


def check_verdict(verdict: Verdict, corrections: int, comment: str, rules: VerdictRules) -> None:
    """Refuse (`JudgementRejected`, a 422 at the gateway) a verdict its corrections contradict."""
    n = rules.agree_mostly_corrections
    if verdict == Verdict.AGREE_ALL:
        ok = corrections == 0
    elif verdict == Verdict.AGREE_MOSTLY:
        ok = corrections == n
    else:
        ok = corrections > n or (rules.disagree_with_reason and bool(comment.strip()))
    if not ok:
        meaning = rules.describe()[verdict.value]
        raise JudgementRejected(
            f"{verdict.value} means {meaning}; this vote has {corrections} correction{'s' if corrections != 1 else ''}"
            + (" and no comment" if verdict == Verdict.DISAGREE and rules.disagree_with_reason else ""),
            verdict=verdict.value, corrections=corrections, verdict_rules=rules.describe())
