"""Offline, rule-based grading of lumbar spine MRI reports (condition x level x grade).

Why rules: like the CXR extractor (`rules.py`), they need no model, are deterministic and fast,
and give every study a suggestion the readers can correct. Lumbar reports are structured by
disc level, so the steps differ from the CXR labeller:

1. split sentences (request sections dropped) with `rules.split_sentences`;
2. give each sentence its levels: the levels it names ("L4-5", "L4/L5", "L4-L5", "L5-S1",
   lists and "L2-3 through L4-5" ranges), else those of the level header ("L4-L5: ...") it
   continues, until a blank line or section header; sentences naming several levels are cut
   so that each level owns the findings next to it;
3. find condition mentions with the taxonomy phrases (`lumbar.yaml`), plus bare
   "stenosis"/"narrowing", which names every condition when negated ("no significant stenosis");
4. grade each mention from the nearest grade word before it (else after it: "foramina are
   patent"), negation (=> Normal/Mild), and side words ("severe left and moderate right").

Conventions (the gold set in tests/data/lumbar_gold_reports.jsonl follows them):
- a range ("mild to moderate", "moderate-severe") takes its upper grade and is flagged
  uncertain: an under-call is the costlier error (weights 1/2/4) and readers see the flag;
- a hedged or ungraded positive mention ("canal stenosis at L4-5") is Moderate, flagged;
- a foraminal/subarticular mention with no side, or "X greater than Y", names both sides;
- a positive bare "stenosis" with no structure named is read as spinal canal, flagged.
Report text is only ever matched, never obeyed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from services.common.contracts import Certainty, Finding, Laterality
from services.common.protocols.cxr.extract import split_sentences
from services.common.protocols.lumbar.grid import Condition, Grade, Group, Level, cell_id
from services.common.taxonomy import Taxonomy, compile_phrases

_RANK = {Grade.NORMAL_MILD: 0, Grade.MODERATE: 1, Grade.SEVERE: 2}
_LEVEL_RE = re.compile(
    r"\b(?:L(?P<a>[1-5])\s*[-\u2013/]?\s*(?:L?(?P<b>[1-5])|(?P<s>S1))\b|(?P<ls>lumbosacral))",
    re.IGNORECASE)
_JOINER_RE = re.compile(r"^\s*(?:,\s*(?:and\s+)?|and\s+|&\s*|(?P<range>through|thru|to|-)\s*)$",
                        re.IGNORECASE)
_GENERIC_RE = re.compile(r"\b(?:stenos[ie]s|narrowing|stenotic|narrowed)\b", re.IGNORECASE)
_NOT_A_CONDITION_RE = re.compile(r"(?:disc|disk|joint|interspace)(?: space| height)?\s*$", re.I)
_BREAK_RE = re.compile(r"[,;:()]|\b(?:with|but|however|resulting in|results in|causing|causes|"
                       r"which|producing|contributing to|and there is|there is)\b", re.IGNORECASE)
_SECTION_RE = re.compile(r"\n\s*\n|[A-Za-z][A-Za-z ]{2,30}:")
_COMPARATIVE_RE = re.compile(r"\b(?:left|right)\s+(?:greater|more|worse)\s+than\s+(?:left|right)\b"
                             r"|\bworse\s+on\s+the\s+(?:left|right)\b", re.IGNORECASE)
_MAX_NEGATION_GAP = 6  # words between "no" and the mention it negates


@dataclass(frozen=True)
class GradedMention:
    """One condition at one level, graded from one place in the report."""

    condition: Condition
    level: Level
    grade: Grade
    negated: bool  # graded Normal/Mild because the report says the condition is absent
    uncertain: bool  # a range, a hedge or no grade word: readers should look closely
    evidence: str
    evidence_start: int
    evidence_end: int


@dataclass(frozen=True)
class Lexicon:
    """The taxonomy's phrases compiled once: condition groups, grades, negations, sides."""

    groups: Mapping[Group, re.Pattern[str]]
    conditions: Mapping[tuple[Group, str], Condition]  # (group, side) -> condition
    grade_words: Mapping[str, Grade]
    grade_re: re.Pattern[str]
    negation_re: re.Pattern[str]
    side_words: Mapping[str, str]


@cache
def lexicon_for(taxonomy: Taxonomy) -> Lexicon:
    """Compile the lumbar taxonomy's phrase lists (cached per taxonomy instance)."""
    groups, conditions = {}, {}
    for label in taxonomy.labels:
        group, side = Group(label.extra["group"]), str(label.extra["side"])
        groups.setdefault(group, label.mention_pattern)
        conditions[(group, side)] = Condition(label.id)
    grade_words = {p.lower(): Grade(g["id"]) for g in taxonomy.extra["grades"] for p in g["phrases"]}
    sides = {w.lower(): side for side, words in taxonomy.extra["sides"].items() for w in words}
    negation = compile_phrases(tuple(taxonomy.extra["negations"]))
    return Lexicon(groups, conditions, grade_words, compile_phrases(tuple(grade_words)),
                   negation, sides)


# --- levels -------------------------------------------------------------------------------


def parse_level(text: str) -> Level | None:
    """The disc level a notation names ("L4-5", "L4/L5", "l4-l5", "L5-S1"), else None."""
    match = _LEVEL_RE.fullmatch(text.strip())
    return _level_of(match) if match else None


def _level_of(match: re.Match[str]) -> Level | None:
    if match.group("ls"):
        return Level.L5_S1
    upper = int(match.group("a"))
    if match.group("s"):
        return Level.L5_S1 if upper == 5 else None
    return Level(f"l{upper}_l{upper + 1}") if int(match.group("b")) == upper + 1 else None


@dataclass(frozen=True)
class LevelGroup:
    """Consecutive level mentions read together ("L3-4 and L4-5", "L2-3 through L4-5")."""

    levels: tuple[Level, ...]
    start: int
    end: int


def level_groups(text: str, start: int = 0, end: int | None = None) -> list[LevelGroup]:
    """Level mentions in text[start:end], joined into groups by "and", commas and ranges."""
    found = [(m, _level_of(m)) for m in _LEVEL_RE.finditer(text, start, end or len(text))]
    groups: list[LevelGroup] = []
    for match, level in found:
        if level is None:
            continue
        joiner = _JOINER_RE.match(text[groups[-1].end:match.start()]) if groups else None
        if joiner:
            prev = groups[-1]
            levels = _span(prev.levels[-1], level) if joiner.group("range") else (level,)
            groups[-1] = LevelGroup(tuple(dict.fromkeys(prev.levels + levels)), prev.start,
                                    match.end())
        else:
            groups.append(LevelGroup((level,), match.start(), match.end()))
    return groups


def _span(first: Level, last: Level) -> tuple[Level, ...]:
    order = list(Level)
    i, j = sorted((order.index(first), order.index(last)))
    return tuple(order[i:j + 1])


# --- report -> mentions -------------------------------------------------------------------


def extract_lumbar_grades(report: str, taxonomy: Taxonomy) -> list[GradedMention]:
    """Every graded condition mention in the report, in report order."""
    lex = lexicon_for(taxonomy)
    mentions: list[GradedMention] = []
    context: tuple[Level, ...] = ()
    previous_end = 0
    for start, end in split_sentences(report):
        context = _carried(report, previous_end, start, context)
        groups = level_groups(report, start, end)
        if groups and groups[0].start == start and report[groups[0].end:end].lstrip()[:1] == ":":
            context = groups[0].levels  # a level header: later sentences continue it
        for seg_start, seg_end, levels in _segments(report, start, end, groups, context, lex):
            for cond, grade, negated, uncertain in _grade_segment(report, seg_start, seg_end, lex):
                mentions += [GradedMention(cond, lv, grade, negated, uncertain, report[start:end],
                                           start, end) for lv in levels]
        previous_end = end
    return mentions


def _carried(report: str, gap_start: int, gap_end: int,
             context: tuple[Level, ...]) -> tuple[Level, ...]:
    """The level context after the text between two sentences: a header that names a level
    ("Lumbosacral junction:") sets it, a blank line or another section header ends it."""
    named = level_groups(report, gap_start, gap_end)
    if named:
        return named[-1].levels
    return () if _SECTION_RE.search(report, gap_start, gap_end) else context


def _segments(report: str, start: int, end: int, groups: list[LevelGroup],
              context: tuple[Level, ...], lex: Lexicon) -> list[tuple[int, int, tuple[Level, ...]]]:
    """Cut a sentence so each level group owns the findings next to it.

    Findings first ("moderate stenosis at L3-4 and severe at L4-5"): a group owns the text
    before it. Levels first ("At L3-4 there is ..., at L4-5 ..."): the text after it.
    """
    if not groups:
        return [(start, end, context)] if context else []
    if len(groups) == 1:
        return [(start, end, groups[0].levels)]
    findings_first = _has_mention(report, start, groups[0].start, lex)
    if findings_first:
        cuts = [start] + [g.end for g in groups[:-1]] + [end]
    else:
        cuts = [start] + [g.start for g in groups[1:]] + [end]
    return [(cuts[i], cuts[i + 1], g.levels) for i, g in enumerate(groups)]


def _has_mention(report: str, start: int, end: int, lex: Lexicon) -> bool:
    return any(p.search(report, start, end) for p in lex.groups.values()) or bool(
        _GENERIC_RE.search(report, start, end))


@dataclass(frozen=True)
class _Mention:
    group: Group | None  # None: bare "stenosis", no structure named
    start: int
    end: int


def _find_mentions(report: str, start: int, end: int, lex: Lexicon) -> list[_Mention]:
    """Condition mentions in report order; overlaps resolved longest first."""
    spans = [_Mention(g, m.start(), m.end()) for g, p in lex.groups.items()
             for m in p.finditer(report, start, end)]
    spans += [_Mention(None, m.start(), m.end()) for m in _GENERIC_RE.finditer(report, start, end)
              if not _NOT_A_CONDITION_RE.search(report[max(start, m.start() - 20):m.start()])]
    kept: list[_Mention] = []
    for m in sorted(spans, key=lambda s: (-(s.end - s.start), s.start)):
        if all(m.end <= k.start or m.start >= k.end for k in kept):
            kept.append(m)
    return sorted(kept, key=lambda s: s.start)


_HEAD_OF_RE = re.compile(r"^\s+(?:of|in|involving|at)\s+(?:the\s+|both\s+)?(?:(?:left|right|bilateral)\s+)?$",
                         re.IGNORECASE)


def _absorb_generic(report: str, mentions: list[_Mention]) -> list[_Mention]:
    """Drop a bare "narrowing" that only heads a structure named next to it.

    "severe narrowing of the left neural foramen" and "the left foramen is severely narrowed"
    name one foraminal finding, not a foraminal and a canal finding.
    """
    kept = []
    for i, m in enumerate(mentions):
        if m.group is None:
            prev = mentions[i - 1] if i else None
            nxt = mentions[i + 1] if i + 1 < len(mentions) else None
            if prev and prev.group and not _BREAK_RE.search(report, prev.end, m.start):
                continue
            if nxt and nxt.group and _HEAD_OF_RE.match(report[m.end:nxt.start]):
                continue
        kept.append(m)
    return kept


@dataclass(frozen=True)
class _Reading:
    """What the words around one mention say: grade, negation, hedging, sides."""

    grade: Grade | None
    negated: bool
    uncertain: bool
    sides: tuple[tuple[str, Grade | None], ...]  # (side, the grade written next to it)


_CONNECTORS_RE = re.compile(r"^[\s,/]*(?:(?:and|or|nor|as well as)\b[\s,]*)?$", re.IGNORECASE)


def _grade_segment(report: str, start: int, end: int,
                   lex: Lexicon) -> Iterable[tuple[Condition, Grade, bool, bool]]:
    """(condition, grade, negated, uncertain) for each mention in report[start:end]."""
    mentions = _absorb_generic(report, _find_mentions(report, start, end, lex))
    previous: _Reading | None = None
    for i, m in enumerate(mentions):
        reading = _read(report, mentions, i, (start, end), lex, previous)
        yield from _conditions(m.group, reading, lex)
        previous = reading


def _read(report: str, mentions: list[_Mention], i: int, segment: tuple[int, int], lex: Lexicon,
          previous: _Reading | None) -> _Reading:
    """Grade mention i: from the words before it, else as a list member ("no canal, foraminal
    or recess stenosis"), else from the words after the list ("X and Y are mildly narrowed")."""
    m = mentions[i]
    between = report[mentions[i - 1].end if i else segment[0]:m.start]
    own = _read_window(_after_last_break(between), lex)
    if own.grade is not None or own.negated:
        return own
    listed = bool(previous and _CONNECTORS_RE.match(_strip_sides(between, lex)))
    if listed and previous and (previous.grade is not None or previous.negated):
        return _Reading(previous.grade, previous.negated, previous.uncertain, own.sides)
    if _read_window(_after_last_break(between, commas=False), lex).negated:
        return _Reading(Grade.NORMAL_MILD, True, False, own.sides)
    after = _read_window(_before_first_break(_after_list(report, mentions, i, segment[1])), lex,
                         post=True)
    return _Reading(after.grade, after.negated, after.uncertain, own.sides or after.sides)


def _after_list(report: str, mentions: list[_Mention], i: int, end: int) -> str:
    """The words after mention i and any list members joined to it, up to the next mention."""
    j = i
    while j + 1 < len(mentions) and _CONNECTORS_RE.match(
            re.sub(r"\b(?:left|right|bilateral)\b", "", report[mentions[j].end:mentions[j + 1].start])):
        j += 1
    return report[mentions[j].end:mentions[j + 1].start if j + 1 < len(mentions) else end]


def _after_last_break(text: str, commas: bool = True) -> str:
    """The clause a mention sits in; without `commas`, a comma list counts as one clause."""
    cuts = [b.end() for b in _BREAK_RE.finditer(text) if commas or b.group() != ","]
    return text[cuts[-1]:] if cuts else text


def _before_first_break(text: str) -> str:
    match = _BREAK_RE.search(text)
    return text[:match.start()] if match else text


def _strip_sides(text: str, lex: Lexicon) -> str:
    return " ".join(w for w in text.split() if w.lower().strip(",") not in lex.side_words)


def _read_window(text: str, lex: Lexicon, post: bool = False) -> _Reading:
    """Nearest grade (ranges take the upper end), negation after it, and side/grade pairs."""
    text = _COMPARATIVE_RE.sub(" bilateral ", text)
    grades = _grade_events(text, lex)
    negations = list(lex.negation_re.finditer(text))
    last = grades[-1] if grades else None
    negated = bool(negations) and (last is None or negations[-1].end() >= last[1]) and (
        post or _words(text[negations[-1].end():]) <= _MAX_NEGATION_GAP)
    if negated:
        return _Reading(Grade.NORMAL_MILD, True, False, _sides(text, [], lex))
    grade = last[2] if last else None
    return _Reading(grade, False, bool(last and last[3]), _sides(text, grades, lex))


def _words(text: str) -> int:
    return len(text.split())


_RANGE_JOIN_RE = re.compile(r"^\s*(?:-\s*)?(?:to|/|or|into|-)(?:\s*-)?\s*$", re.IGNORECASE)


def _grade_events(text: str, lex: Lexicon) -> list[tuple[int, int, Grade, bool]]:
    """(start, end, grade, is_range) for each grade word; "mild to moderate" is one event."""
    events: list[tuple[int, int, Grade, bool]] = []
    for match in lex.grade_re.finditer(text):
        grade = _grade_word(match.group(), lex)
        if events and _RANGE_JOIN_RE.match(text[events[-1][1]:match.start()]):
            s, _, g, _ = events.pop()
            events.append((s, match.end(), max(g, grade, key=_RANK.get), True))
        else:
            events.append((match.start(), match.end(), grade, False))
    return events


def _grade_word(text: str, lex: Lexicon) -> Grade:
    """The grade a matched phrase names; phrase matching also accepts plurals and hyphens."""
    key = re.sub(r"[\s-]+", " ", text.lower())
    for candidate in (key, key.removesuffix("es"), key.removesuffix("s"), key.replace(" ", "-")):
        if candidate in lex.grade_words:
            return lex.grade_words[candidate]
    raise KeyError(text)


_SIDE_TOKEN_RE = re.compile(r"\b[a-z]+\b", re.IGNORECASE)


def _sides(text: str, grades: list[tuple[int, int, Grade, bool]],
           lex: Lexicon) -> tuple[tuple[str, Grade | None], ...]:
    """Each side word with the grade written since the previous side word ("severe left and
    moderate right"); a side with none written gets None."""
    found, g = [], 0
    for token in _SIDE_TOKEN_RE.finditer(text):
        side = lex.side_words.get(token.group().lower())
        if side is None:
            continue
        own = [e for e in grades[g:] if e[1] <= token.start()]
        g += len(own)
        found.append((side, own[-1][2] if own else None))
    return tuple(found)


def _conditions(group: Group | None, reading: _Reading,
                lex: Lexicon) -> Iterable[tuple[Condition, Grade, bool, bool]]:
    """Expand one reading to conditions: sides for lateral groups, all five for "no stenosis"."""
    grade = reading.grade or Grade.MODERATE
    uncertain = reading.uncertain or reading.grade is None
    if group is None:
        if reading.negated:
            yield from ((c, Grade.NORMAL_MILD, True, False) for c in Condition)
        else:
            yield Condition.SPINAL_CANAL_STENOSIS, grade, False, True
        return
    if group is Group.SPINAL:
        yield lex.conditions[(group, "none")], grade, reading.negated, uncertain
        return
    for side, side_grade in _lateral(reading):
        own_uncertain = uncertain if side_grade in (None, reading.grade) else False
        yield lex.conditions[(group, side)], side_grade or grade, reading.negated, own_uncertain


def _lateral(reading: _Reading) -> list[tuple[str, Grade | None]]:
    """(left|right, grade) pairs; no side or "bilateral" names both sides."""
    pairs: dict[str, Grade | None] = {}
    for side, grade in reading.sides or (("bilateral", None),):
        for one in (("left", "right") if side == "bilateral" else (side,)):
            pairs[one] = grade if grade is not None else pairs.get(one)
    return list(pairs.items())


# --- into the event contract --------------------------------------------------------------


def to_finding(m: GradedMention, taxonomy: Taxonomy) -> Finding:
    """A `Finding` for the existing findings-extracted event, losing nothing: `label_hint` is
    the cell, `text` the canonical "<grade> <condition> at <level>" the mapper reads back."""
    names = {lv["id"]: lv["name"] for lv in taxonomy.extra["levels"]}
    label = taxonomy.get(m.condition.value)
    side = label.extra["side"] if label else "none"
    return Finding(
        text=f"{m.grade.value} {label.name if label else m.condition.value} at {names[m.level.value]}",
        certainty=Certainty.UNCERTAIN if m.uncertain else Certainty.PRESENT,
        laterality=Laterality(side),
        evidence=m.evidence, evidence_start=m.evidence_start, evidence_end=m.evidence_end,
        label_hint=cell_id(m.condition, m.level))


def extract_lumbar_findings(report: str, taxonomy: Taxonomy) -> list[Finding]:
    """`extract_lumbar_grades` as contract `Finding`s (one per mention and level)."""
    return [to_finding(m, taxonomy) for m in extract_lumbar_grades(report, taxonomy)]
