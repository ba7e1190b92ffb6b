"""Alternations grouped by first character match exactly what the plain alternations match.

The extractor's trigger phrases and every taxonomy label's mention, nonspecific and exclusion
phrases are compiled grouped (services.common.alternation). These tests run the grouped and the
plain (pre-grouping) patterns side by side over the real Open-i reports (3,080, when the
development set is beside the repository) and the demo's 13,735 synthetic reports, and require
the same spans and the same trigger at every match.
"""

from __future__ import annotations

import bisect
import re
import re._constants as sre_c  # the stdlib's own regex parser, as services.common.alternation
import re._parser as sre_p
from typing import Any

import numpy as np
import pytest
import yaml

from radcurate.eval_labels import load_openi, openi_dir
from radcurate.synth.cohort import build_cohort
from radcurate.synth.cxr import COHORT_STREAM, _report_rng
from radcurate.synth.report import write_report
from services.common import phi
from services.common.alternation import LoweredText, first_chars, grouped
from services.common.contracts import Finding
from services.common.protocols.cxr import extract
from services.common.taxonomy import TAXONOMY_DIR, Taxonomy, compile_phrases, load_taxonomy, parse_taxonomy

DEMO_STUDIES = 13_735  # `make demo`'s pool, seed 0


def demo_reports() -> list[str]:
    cohort = build_cohort(np.random.default_rng([0, COHORT_STREAM]), DEMO_STUDIES)
    return [write_report(truth, _report_rng(0, truth.study_id)).text for truth in cohort]


def openi_reports() -> list[str]:
    folder = openi_dir()
    if not (folder / "reports.csv").exists():
        pytest.skip(f"the Open-i development set is not at {folder} (set RADCURATE_OPENI_DIR)")
    reports = [row["report"] for row in load_openi(folder)]
    assert len(reports) == 3080
    # the extractor reads the masked report (services/extractor), so both forms are covered
    return reports + [phi.mask(report).masked_text for report in reports]


def trigger_matches(pattern: re.Pattern[str], report: str) -> list[tuple[int, int, int]]:
    return [(*m.span(), int(m.lastgroup[1:].partition("_")[0])) for m in pattern.finditer(report)]  # type: ignore[index]


def phrase_patterns() -> list[tuple[str, re.Pattern[str], re.Pattern[str]]]:
    """(what, grouped, plain) for every phrase list of every label of both taxonomies."""
    found = []
    for name in ("cxr", "lumbar"):
        for label in load_taxonomy(name).labels:
            for kind in ("synonyms+nonspecific", "nonspecific", "exclusions"):
                phrases = label.synonyms + label.nonspecific if kind == "synonyms+nonspecific" else getattr(label, kind)
                new, old = compile_phrases(phrases), compile_phrases(phrases, grouped_by_first_char=False)
                if new is not None and old is not None:
                    found.append((f"{name}/{label.id}/{kind}", new, old))
    return found


PLAIN_TRIGGERS = re.compile(
    extract._trigger_pattern(sorted(extract.TRIGGERS, key=lambda t: len(t[0]), reverse=True), False), re.IGNORECASE
)


# Where a report may be cut into pieces without changing any match: after a full stop, the spaces
# and line breaks that follow it (dropped). `assert_cuts_change_no_match` checks, on the patterns
# themselves, why that is exact.
SENTENCE_END = re.compile(r"(?<=\.)[ \n]+")
_ZERO_WIDTH = (sre_c.AT, sre_c.ASSERT, sre_c.ASSERT_NOT)
_REPEATS = (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT)
_CATEGORIES = {sre_c.CATEGORY_WORD: r"\w", sre_c.CATEGORY_NOT_WORD: r"\W", sre_c.CATEGORY_SPACE: r"\s",
               sre_c.CATEGORY_NOT_SPACE: r"\S", sre_c.CATEGORY_DIGIT: r"\d", sre_c.CATEGORY_NOT_DIGIT: r"\D"}


def _may_be(op: Any, av: Any, char: str) -> bool:
    """Whether one character-consuming item may consume `char`, case ignored (True when unsure)."""
    cased = {char, char.lower(), char.upper()}
    if op is sre_c.LITERAL:
        return chr(av) in cased
    if op is sre_c.NOT_LITERAL:
        return chr(av) not in cased or len(cased) > 1
    if op is sre_c.CATEGORY:
        return av not in _CATEGORIES or re.match(_CATEGORIES[av], char) is not None
    if op is sre_c.IN:
        negated = bool(av) and av[0][0] is sre_c.NEGATE
        hit = any((o is sre_c.LITERAL and chr(a) in cased)
                  or (o is sre_c.RANGE and any(a[0] <= ord(c) <= a[1] for c in cased))
                  or (o is sre_c.CATEGORY and (a not in _CATEGORIES or re.match(_CATEGORIES[a], char) is not None))
                  or o not in (sre_c.NEGATE, sre_c.LITERAL, sre_c.RANGE, sre_c.CATEGORY) for o, a in av)
        return True if negated else hit  # a negated set: unsure, so it may
    return True  # ANY, ...: it may


def _after_a_dot(items: Any, dot: bool, lookbehinds: list[Any]) -> bool:
    """Walks a parsed pattern and fails if anything may be consumed, or looked at ahead, after a
    consumed '.' but a word boundary, or an anchor other than a word boundary occurs; returns
    whether a '.' may have been consumed by its end. Collects the look-behinds."""
    for op, av in items:
        if op is sre_c.AT:  # beginnings and ends of lines or texts read where a cut is: none
            assert av in (sre_c.AT_BOUNDARY, sre_c.AT_NON_BOUNDARY), av
        elif op in (sre_c.ASSERT, sre_c.ASSERT_NOT):
            if av[0] < 0:
                lookbehinds.append(av[1])  # it reads what precedes: checked apart
            else:
                _after_a_dot(av[1], dot, lookbehinds)  # a look-ahead reads on: the same rule
        elif op is sre_c.SUBPATTERN:
            dot = _after_a_dot(av[3], dot, lookbehinds)
        elif op is sre_c.ATOMIC_GROUP:
            dot = _after_a_dot(av, dot, lookbehinds)
        elif op is sre_c.BRANCH:
            dot = any([_after_a_dot(branch, dot, lookbehinds) for branch in av[1]])
        elif op in _REPEATS:
            once = _after_a_dot(av[2], dot, lookbehinds)
            if av[1] > 1:
                _after_a_dot(av[2], once, lookbehinds)  # a second round after the first
            dot = dot or once
        else:
            assert not dot, "a character may be consumed after a '.'"
            dot = _may_be(op, av, ".")
    return dot


def _start(items: Any) -> tuple[bool, bool]:
    """Whether a match may begin by consuming a space or a line break, and whether it may be empty
    (each True when unsure)."""
    for op, av in items:
        if op in _ZERO_WIDTH:
            continue
        if op is sre_c.SUBPATTERN:
            space, empty = _start(av[3])
        elif op is sre_c.ATOMIC_GROUP:
            space, empty = _start(av)
        elif op is sre_c.BRANCH:
            found = [_start(branch) for branch in av[1]]
            space, empty = any(f[0] for f in found), any(f[1] for f in found)
        elif op in _REPEATS:
            space, empty = _start(av[2])
            empty = empty or av[0] == 0
        else:
            space, empty = _may_be(op, av, " ") or _may_be(op, av, "\n"), False
        if space or not empty:
            return space, False
    return False, True


def assert_cuts_change_no_match(patterns: list[re.Pattern[str]]) -> None:
    """Why cutting reports at SENTENCE_END and joining the pieces with a NUL line keeps every
    match of these patterns, at its place in its piece: no match consumes anything after a '.', nor
    starts with (or is) a space or line break, so none includes or starts in a cut; after a '.' only
    a word boundary is read, and a non-word character follows the '.' before and after the cut; a
    piece starts after a space or a line break before the cut and after a line break after it, and
    every look-behind reads one character and takes a space and a line break alike; no other anchor
    (line or text beginnings and ends) is read."""
    lookbehinds: list[Any] = []
    for pattern in patterns:
        parsed = list(sre_p.parse(pattern.pattern, pattern.flags))
        _after_a_dot(parsed, False, lookbehinds)
        assert _start(parsed) == (False, False), pattern.pattern[:80]
    for behind in lookbehinds:
        assert behind.getwidth() == (1, 1) and len(behind) == 1
        [(op, av)] = list(behind)
        assert _may_be(op, av, " ") == _may_be(op, av, "\n")
        assert op in (sre_c.LITERAL, sre_c.IN) and not (op is sre_c.IN and av and av[0][0] is sre_c.NEGATE)


def pieces_of(reports: list[str]) -> tuple[str, list[list[tuple[int, int]]]]:
    """One text of every distinct piece of the reports (cut at SENTENCE_END), the pieces apart by
    a line holding a NUL, which no phrase or trigger matches nor reads as a word character; and
    for each report, where its pieces are in that text."""
    at: dict[str, int] = {}
    chunks: list[str] = []
    length = 0
    where = []
    for report in reports:
        spots = []
        for piece in SENTENCE_END.split(report):
            if piece not in at:
                at[piece] = length
                chunks.append(piece)
                length += len(piece) + 3
            spots.append((at[piece], at[piece] + len(piece)))
        where.append(spots)
    return "\n\x00\n".join(chunks), where


def assert_same_matches(reports: list[str]) -> None:
    assert extract._TRIGGER_RE.pattern != PLAIN_TRIGGERS.pattern  # the grouping is in use
    patterns = phrase_patterns()
    assert sum(new.pattern != old.pattern for _, new, old in patterns) >= 12
    assert_cuts_change_no_match([PLAIN_TRIGGERS, extract._TRIGGER_RE, extract._TRIGGER_SCAN_RE,
                                 *(p for _, new, old in patterns for p in (new, old))])
    # Per piece, the same matches as in its report (see assert_cuts_change_no_match), and each
    # distinct piece once, in one regex call per pattern: the demo's reports share most sentences.
    text, where = pieces_of(list(dict.fromkeys(reports)))
    assert [(t.start, t.end, t.polarity, t.direction) for t in extract.find_triggers(text)] == [
        (start, end, *extract._TRIGGER_KINDS[index]) for start, end, index in trigger_matches(PLAIN_TRIGGERS, text)
    ]
    # The plain phrase lists' match starts, for the key filter below; a list that two labels share
    # (the left and right lumbar labels) compiles to the same pair of patterns, compared once.
    plain_starts: dict[str, list[int]] = {}
    for what, new, old in patterns:
        if old.pattern not in plain_starts:
            spans = [m.span() for m in old.finditer(text)]
            assert [m.span() for m in new.finditer(text)] == spans, what
            plain_starts[old.pattern] = [start for start, _ in spans]
    # The key filter: a label it skips in a report has no mention (nor exclusion) there, i.e. no
    # match of its plain pattern starts within any of that report's pieces.
    checks = [
        (label.id, keys, plain_starts[plain.pattern])
        for label in load_taxonomy("cxr").labels
        for keys, phrases in (
            (label.mention_keys, label.synonyms + label.nonspecific), (label.exclusion_keys, label.exclusions)
        )
        if (plain := compile_phrases(phrases, grouped_by_first_char=False)) is not None
    ]
    skipped = 0
    for report, spots in zip(dict.fromkeys(reports), where, strict=True):
        assert " ".join(text[a:b] for a, b in spots) == SENTENCE_END.sub(" ", report)
        lowered = LoweredText(report)
        for label_id, keys, starts in checks:
            if lowered.lacks(keys):
                skipped += 1
                assert all(bisect.bisect_left(starts, a) == bisect.bisect_left(starts, b) for a, b in spots), (
                    label_id, report)
    assert skipped > len(where)  # the filter does skip


def plain_extraction(reports: list[str], taxonomy: Taxonomy, monkeypatch: pytest.MonkeyPatch) -> list[list[Finding]]:
    """What the extractor found before the grouping and the key filter: plain patterns, no keys."""
    plain = parse_taxonomy(taxonomy.name, yaml.safe_load((TAXONOMY_DIR / f"{taxonomy.name}.yaml").read_text()))
    for label in plain.labels:
        for attribute, phrases in (("mention_pattern", label.synonyms + label.nonspecific),
                                   ("nonspecific_pattern", label.nonspecific), ("exclusion_pattern", label.exclusions)):
            label.__dict__[attribute] = compile_phrases(phrases, grouped_by_first_char=False)
        label.__dict__["mention_keys"] = label.__dict__["exclusion_keys"] = None  # never skip
    with monkeypatch.context() as patched:
        patched.setattr(extract, "_TRIGGER_RE", PLAIN_TRIGGERS)
        patched.setattr(extract, "_TRIGGER_SCAN_RE", PLAIN_TRIGGERS)
        return [extract.extract_findings(report, plain) for report in reports]


def assert_same_findings(reports: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    taxonomy = load_taxonomy("cxr")
    found = [extract.extract_findings(report, taxonomy) for report in reports]
    assert found == plain_extraction(reports, taxonomy, monkeypatch)
    assert sum(map(len, found)) > len(reports) / 2  # reports with findings are among them


def test_grouped_matchers_agree_with_the_plain_ones_on_the_demo_reports(monkeypatch):
    reports = demo_reports()
    assert_same_matches(reports)
    assert_same_findings(reports[:500], monkeypatch)


def test_grouped_matchers_agree_with_the_plain_ones_on_the_open_i_reports(monkeypatch):
    reports = openi_reports()
    assert_same_matches(reports)
    assert_same_findings(reports, monkeypatch)


@pytest.mark.parametrize("text", [
    "No pneumothorax.", "NO PNEUMOTHORAX", "ſmall effuſion, not ſeen",  # long s folds to s
    "\u212aerley lines", "İs not seen; ıs absent", "Çardiomegaly? maybe",
    "r/o pneumonia; hx of TB", "no-change in 1.5 cm nodule", "",
])
def test_grouping_keeps_every_match_on_case_and_unicode_edge_cases(text):
    assert trigger_matches(extract._TRIGGER_RE, text) == trigger_matches(PLAIN_TRIGGERS, text)
    for what, new, old in phrase_patterns():
        assert [m.span() for m in new.finditer(text)] == [m.span() for m in old.finditer(text)], what


def test_first_chars_of_branches_optional_prefixes_and_classes():
    assert first_chars(r"no") == {"n"}
    assert first_chars(r"(?:is |are )?(?:not|no)\b", re.IGNORECASE) == {"i", "a", "n"}
    assert first_chars(r"No", re.IGNORECASE) == {"n"}
    assert first_chars(r"No") == {"N"}
    assert first_chars(r"[;:]") == {";", ":"}
    assert first_chars(r"\w+") is None  # a class: unknown
    assert first_chars(r"a?") is None  # can match empty
    assert first_chars("\u00e9t\u00e9") is None  # not ASCII: case folding is not one lower-casing


def test_grouped_tries_only_the_branches_that_can_start_there_and_keeps_their_order():
    source = grouped(["no evidence of", "(?:is )?not", "no", "evaluate"], re.IGNORECASE)
    # by first character, then by first characters, longer first; "no" is in every "no..." group
    assert source == (
        r"(?=e)(?:(?=eva)(?:evaluate))|(?=i)(?:(?=is\ )(?:(?:is )?not))|"
        r"(?=n)(?:(?=no\ )(?:no evidence of|no)|(?=not)(?:(?:is )?not|no)|(?=no)(?:no))"
    )
    assert grouped([r"\w+", "no"]) is None


@pytest.mark.parametrize("source", [
    r"vs\. no", r"(?:a|\.)+b", r"[^a]b",  # may consume on after a '.'
    r"vs\.(?=\s)", r"vs\.$", r"^no", r"(?m)^no",  # read past a '.', or where a line begins
    r"\s+no", r"x?",  # may start in a cut's spaces, or be empty
    r"(?<=\. )no", r"(?<=\w\W)no",  # look back past one character
])
def test_a_pattern_whose_matches_a_cut_at_a_full_stop_could_change_is_refused(source):
    with pytest.raises(AssertionError):
        assert_cuts_change_no_match([re.compile(source, re.IGNORECASE)])


def test_a_pattern_that_reads_a_cut_at_a_full_stop_as_it_reads_the_report_is_accepted():
    assert_cuts_change_no_match([re.compile(source, re.IGNORECASE) for source in (
        r"(?<!\w)vs\.?\b", r"(?<![\w/])no\b", r"\bno[ \t\n-]+change\b", r"(?<=\.)no", r"(?<=\s)no", r"(?<=\S)no")])
    text, where = pieces_of(["No change.  Stable.\nNo change.", "Stable. Vs. no", "No change."])
    assert text == "No change.\n\x00\nStable.\n\x00\nVs.\n\x00\nno"
    assert where == [[(0, 10), (13, 20), (0, 10)], [(13, 20), (23, 26), (29, 31)], [(0, 10)]]


def assert_no_match_before_the_first_key(reports: list[str]) -> None:
    """A label's scan starts at the first of its keys in the report (`LoweredText.first`): no match
    of its plain pattern starts before it, and none at all where no key occurs."""
    checks = [
        (label.id, keys, plain)
        for label in load_taxonomy("cxr").labels
        for keys, phrases in (
            (label.mention_keys, label.synonyms + label.nonspecific), (label.exclusion_keys, label.exclusions)
        )
        if (plain := compile_phrases(phrases, grouped_by_first_char=False)) is not None
    ]
    started_late = 0
    for report in dict.fromkeys(reports):
        lowered = LoweredText(report)
        for label_id, keys, plain in checks:
            first = lowered.first(keys)
            starts = [m.start() for m in plain.finditer(report)]
            if first < 0:
                assert not starts and lowered.lacks(keys), (label_id, report)
            else:
                assert all(start >= first for start in starts), (label_id, report)
                started_late += first > 0
    assert started_late > len(reports)  # scans do start after the beginning


def test_a_label_scan_starting_at_its_first_key_misses_no_match_in_the_demo_and_open_i_reports():
    reports = demo_reports()[:3000]
    try:
        reports += openi_reports()
    except pytest.skip.Exception:
        pass  # the demo's reports alone, where Open-i is not beside the repository
    assert_no_match_before_the_first_key(reports)


def test_the_first_key_is_where_a_scan_may_start():
    lowered = LoweredText("Heart size normal. Small left pleural effusion.")
    assert lowered.first(("effusion", "pleural")) == lowered.lowered.index("pleural")
    assert lowered.first(("kerley",)) == -1 and lowered.first(None) == 0
    assert LoweredText("Effusion ſmall").first(("effusion",)) == 0  # not ASCII: the whole text
