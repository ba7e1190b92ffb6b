"""Identifiers in free text (report text, DICOM descriptors): find them and mask them.

Rules are regular expressions for the identifiers radiology reports most often carry (HIPAA Safe
Harbor's list, as far as text allows): names after a title (Dr./Mr./Mrs./Ms./Prof.), dates,
medical record and accession numbers, phone numbers, e-mail addresses and street addresses.
A mask has the same length as what it hides (underscores), so character offsets into the masked
text are offsets into the original: evidence spans found in the masked report highlight the
right words of the original for a reader, and the audit record (rule, start, end) points at
what was hidden without repeating it.

This is a rule-based filter, not a guarantee: it misses names without a title. It runs in front
of every LLM call and on every descriptor that a release keeps; see the README's security section.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

MASK_CHAR = "_"
_MONTHS = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
           r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_NAME = r"[A-Z][a-zA-Z'\-]+(?:\s+[A-Z]\.)?(?:\s+[A-Z][a-zA-Z'\-]+)?"
_STREET = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl"
           r"|Terrace|Parkway|Pkwy|Highway|Hwy)")

# (rule name, pattern): applied in this order; a span already masked is not masked again.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("email", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    ("name_after_title", re.compile(rf"\b(?:Dr|Mr|Mrs|Ms|Miss|Prof|Doctor)\.?\s+(?P<id>{_NAME})")),
    ("labelled_id", re.compile(
        r"\b(?:MRN|MR\s*#|Medical\s+record(?:\s+(?:number|no\.?))?|Acc(?:ession)?(?:\s*(?:number|no\.?|#))?"
        r"|Patient\s+ID|SSN|Account(?:\s+(?:number|no\.?))?)\s*[:#]?\s*(?P<id>[A-Z]{0,3}\d[\d-]{3,})",
        re.IGNORECASE)),
    ("phone", re.compile(r"(?<![\w.])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}\b")),
    ("address", re.compile(
        rf"\b\d{{1,6}}\s+(?:[A-Z][a-zA-Z]+\s+){{1,4}}{_STREET}\b\.?(?:,?\s+(?:Apt|Suite|Unit)\.?\s*\w+)?"
        r"(?:,\s*[A-Z][a-zA-Z]+(?:\s+[A-Z][a-zA-Z]+)?)?(?:,?\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?)?")),
    ("date", re.compile(
        rf"\b(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-](?:\d{{4}}|\d{{2}})|\d{{4}}-\d{{2}}-\d{{2}}"
        rf"|{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}|\d{{1,2}}\s+{_MONTHS}\.?,?\s+\d{{4}}"
        rf"|{_MONTHS}\.?\s+\d{{4}})\b")),
    # A long digit run with no unit after it is a record number, not a measurement.
    ("mrn_like", re.compile(r"(?<![\w.])\d{6,}(?![\w.]|\s*(?:mm|cm|ml|mL|mg|HU|%))")),
)

_TITLES = ("Dr", "Mr", "Ms", "Miss", "Prof", "Doctor")  # "Mrs" contains "Mr"
_LONG_DIGIT_RUN = re.compile(r"\d{6}")
_PHONE_TAIL = re.compile(r"\d{3}[\s.-]\d{4}")
_ID_DIGITS = re.compile(r"\d[\d-]{3}")
_NUMBER_THEN_WORD = re.compile(r"\d\s+[A-Z]")
_DATE_DIGITS = re.compile(r"\d(?:[/.-]\d|\d{3})")
# What each rule's match must contain, checked first: a rule's own pattern tries to match at every
# position (its leading `\b` or look-behind keeps the regex engine from skipping ahead), while
# these are substring searches or patterns that start with a digit, which the engine scans for in
# one pass. A text without what a rule needs cannot match it, so skipping the rule changes no
# result (tests/unit/test_phi.py checks both ways); on a typical report this halves `mask`'s cost,
# which runs in front of every LLM call.
_NEEDS: dict[str, Callable[[str], object]] = {
    "email": lambda text: "@" in text,
    "name_after_title": lambda text: any(title in text for title in _TITLES),
    "labelled_id": _ID_DIGITS.search,
    "phone": _PHONE_TAIL.search,
    "address": _NUMBER_THEN_WORD.search,
    "date": _DATE_DIGITS.search,
    "mrn_like": _LONG_DIGIT_RUN.search,
}


class MaskedText(str):
    """Text that `mask` produced, possibly between markup of our own that holds no identifier
    (e.g. a prompt's `<report>` tags). Masking is idempotent, so `masked` hands it back as it
    is rather than masking it again: the report is masked once per extraction, not once per layer."""

    __slots__ = ()


@dataclass(frozen=True)
class MaskSpan:
    """What was hidden: which rule, and where in the text (the original is not repeated)."""

    rule: str
    start: int
    end: int


@dataclass(frozen=True)
class Masked:
    text: str
    spans: tuple[MaskSpan, ...]

    @property
    def masked_text(self) -> MaskedText:
        """The masked text, marked as such for `masked`."""
        return MaskedText(self.text)

    def audit(self) -> list[dict[str, object]]:
        """The spans as JSON-ready records, stored with what was derived from the text."""
        return [asdict(s) for s in self.spans]


def find(text: str) -> list[MaskSpan]:
    """Identifier spans in `text`, in order, not overlapping (earlier rules win)."""
    spans: list[MaskSpan] = []
    taken: list[bool] = []  # made at the first match: most reports have none
    for rule, pattern in RULES:
        if not _NEEDS[rule](text):
            continue
        for match in pattern.finditer(text):
            start, end = match.span("id") if "id" in pattern.groupindex else match.span()
            if not taken:
                taken = [False] * len(text)
            if start == end or any(taken[start:end]):
                continue
            taken[start:end] = [True] * (end - start)
            spans.append(MaskSpan(rule, start, end))
    return sorted(spans, key=lambda s: s.start)


def mask(text: str) -> Masked:
    """The text with every identifier found replaced by as many underscores (offsets kept)."""
    spans = find(text)
    if not spans:  # nothing to hide: the text as it is, without a copy character by character
        return Masked(text, ())
    chars = list(text)
    for span in spans:
        chars[span.start:span.end] = MASK_CHAR * (span.end - span.start)
    return Masked("".join(chars), tuple(spans))


def masked(text: str) -> MaskedText:
    """`text` with every identifier masked; text already masked (a MaskedText) is returned as is."""
    return text if isinstance(text, MaskedText) else mask(text).masked_text
