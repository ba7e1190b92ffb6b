"""Alternations grouped by first character match exactly what the plain alternations match.

The extractor's trigger phrases and every taxonomy label's mention, nonspecific and exclusion
phrases are compiled grouped (services.common.alternation). These tests run the grouped and the
plain (pre-grouping) patterns side by side over the real Open-i reports (3,080, when the
development set is beside the repository) and the demo's 13,735 synthetic reports, and require
the same spans and the same trigger at every match.
"""

from __future__ import annotations

import re

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


def assert_same_matches(reports: list[str]) -> None:
    assert extract._TRIGGER_RE.pattern != PLAIN_TRIGGERS.pattern  # the grouping is in use
    patterns = phrase_patterns()
    assert sum(new.pattern != old.pattern for _, new, old in patterns) >= 12
    reports = list(dict.fromkeys(reports))
    # One text, the reports apart by a line holding a NUL, which no phrase or trigger matches nor
    # reads as a word character: per report, the same matches as alone, in one regex call each.
    text = "\n\x00\n".join(reports)
    assert [(t.start, t.end, t.polarity, t.direction) for t in extract.find_triggers(text)] == [
        (start, end, *extract._TRIGGER_KINDS[index]) for start, end, index in trigger_matches(PLAIN_TRIGGERS, text)
    ]
    for what, new, old in patterns:
        assert [m.span() for m in new.finditer(text)] == [m.span() for m in old.finditer(text)], what
    # the key filter: a label it skips in a report has no mention (nor exclusion) there
    checks = [
        (label.id, keys, plain)
        for label in load_taxonomy("cxr").labels
        for keys, phrases in (
            (label.mention_keys, label.synonyms + label.nonspecific), (label.exclusion_keys, label.exclusions)
        )
        if (plain := compile_phrases(phrases, grouped_by_first_char=False)) is not None
    ]
    skipped = 0
    for report in reports:
        lowered = LoweredText(report)
        for label_id, keys, plain in checks:
            if lowered.lacks(keys):
                skipped += 1
                assert plain.search(report) is None, (label_id, report)
    assert skipped > len(reports)  # the filter does skip


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
