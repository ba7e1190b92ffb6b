"""Offline, rule-based finding extraction (the CheXpert-labeler / NegBio / NegEx family).

Why rules at all: they need no model, are deterministic and fast (thousands of reports a second
on one core), so they label a whole archive as a baseline and keep working when the LLM backend
is unavailable. The steps follow the CheXpert labeler:

1. drop sections that describe the request rather than the image (indication, history,
   comparison, technique) and split the rest into sentences, keeping character spans;
2. find label mentions with the taxonomy's synonym phrases (minus its exclusion phrases);
3. classify each mention as negated, possible, probable or positive from the nearest trigger
   phrase before it and after it in the same clause (NegEx-style scope, ended by "but", "however",
   ";", ...). A negation's scope runs over a whole list of findings ("No focal consolidation,
   suspicious pulmonary opacity, large pleural effusion, or pneumothorax is identified");
4. drop loose descriptors the sentence attributes to another label ("airspace opacities
   compatible with discoid atelectasis" is atelectasis, not pneumonia);
5. per label, keep the mentions of the highest confidence: positive > probable > possible >
   negated, and drop the label when only negated mentions remain (negated == absent).

Typed templates are read by their fields: "Pleural effusion: small left." and "Pneumothorax? No."
from the value or the answer (its side too), and "Heart: mildly enlarged." as its name and value
together ("heart ... enlarged").

Hedges come in two strengths, as radiologists use them: "probable", "likely", "A versus B" and
"borderline" commit to the finding; "possible", "may represent", "cannot exclude" and "question of"
do not. Both are flagged uncertain; the confidence tells them apart. Stability wording
("unchanged", "stable", "no change in") never negates: a stable finding is still present. Report
text is only ever matched, never obeyed.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from enum import Enum

from services.common import alternation
from services.common.alternation import LoweredText
from services.common.contracts import Certainty, Finding, Laterality
from services.common.taxonomy import LabelDef, Taxonomy, compile_phrases


class Polarity(Enum):
    """What a trigger phrase does to a mention in its scope."""

    NEGATED = "negated"
    UNCERTAIN = "uncertain"  # a weak hedge: "possible", "may represent", "cannot exclude"
    PROBABLE = "probable"  # a committing hedge: "probable", "likely", "A versus B", "borderline"
    HISTORICAL = "historical"  # "history of": the patient's past, not this image; a short scope
    PSEUDO = "pseudo"  # contains a trigger ("no change in", "to suggest") but is none: skipped
    TERMINATION = "termination"  # ends a trigger's scope ("but", "however", ";")


class Direction(Enum):
    """Whether a trigger governs the words after it (PRE), before it (POST), or both."""

    PRE = "pre"
    POST = "post"
    BOTH = "both"


_N, _U, _L, _P, _T = (
    Polarity.NEGATED, Polarity.UNCERTAIN, Polarity.PROBABLE, Polarity.PSEUDO, Polarity.TERMINATION
)
_PRE, _POST, _BOTH = Direction.PRE, Direction.POST, Direction.BOTH

# (regex, polarity, direction). Order does not matter: longer patterns are tried first.
TRIGGERS: tuple[tuple[str, Polarity, Direction], ...] = (
    # pseudo-negations: stability / comparison wording, and "no ... to suggest"
    (r"no (?:significant |substantial |definite |appreciable |interval |significant interval )?change", _P, _BOTH),
    (r"(?:not|without) (?:significantly |substantially )?(?:significant )?change[ds]?", _P, _BOTH),
    (r"no (?:significant )?(?:increase|decrease)", _P, _BOTH),
    (r"to suggest", _P, _BOTH),
    (r"not only", _P, _BOTH),
    (r"gram negative", _P, _BOTH),
    # negation before the mention
    (r"no", _N, _PRE),
    (r"without", _N, _PRE),
    (r"negative for", _N, _PRE),
    (r"no (?:radiographic |definite |convincing |other |new )?"
     r"(?:evidence|signs?|findings?) (?:of|for|to suggest)", _N, _PRE),
    (r"(?:free|clear) of", _N, _PRE),
    (r"absence of", _N, _PRE),
    (r"(?:interval |near[- ]complete |complete )?(?:resolution|removal|clearing) of", _N, _PRE),
    (r"resolved", _N, _BOTH),
    (r"(?:to (?:exclude|rule[- ]out)|r/o|rule[- ]out|exclude|evaluate for|eval for|assess for)", _N, _PRE),
    (r"rather than", _N, _PRE),
    (r"(?:(?:a |known |prior |previous )?history|hx) of", Polarity.HISTORICAL, _PRE),
    # a finding that something could hide is not seen: "bony overlap could obscure a nodule"
    (r"(?:could|may|might|can|would) (?:obscure|mask|hide|conceal)", _N, _PRE),
    # a look-alike: "skin fold simulating a pneumothorax", "nipple shadow mimicking a nodule"
    (r"(?:mimic(?:s|king)?|simulat(?:es?|ing)|pseudo)", _N, _PRE),
    (r"no longer", _N, _PRE),
    (r"(?:neither|nor)", _N, _PRE),
    (r"(?:do|does|did) ?n[o']t(?: (?:appear to (?:be|have|represent)|demonstrate|show|reveal|identify))?", _N, _PRE),
    (r"(?:evaluation|assessment) for", _N, _PRE),
    (r"(?:is |are )?(?:unlikely|less likely|not likely)", _N, _BOTH),
    # negation after the mention
    (r"(?:is |are |was |were )?(?:not|no longer) (?:clearly |definitely |well )?"
     r"(?:seen|visualized|visible|identified|appreciated|present|demonstrated|evident|noted|detected|suspected)",
     _N, _POST),
    # "pneumothorax has been excluded", "pneumonia is ruled out", telegraphic "effusion excluded";
    # not "excluded from the field of view" (an anatomical region, not a finding, left out)
    (r"(?:(?:is|are|was|were|has been|have been|had been) (?:now |also )?)?(?:excluded|ruled out)(?! from)",
     _N, _POST),
    (r"(?:is|are|was|were) negative(?! for)", _N, _POST),
    (r"(?:is |are )?absent", _N, _POST),
    (r"(?:has|have) (?:also )?(?:been )?(?:resolved|cleared|removed|discontinued)", _N, _POST),
    (r"(?:been |is |are )?(?:cleared|removed|discontinued)", _N, _POST),
    (r"removal", _N, _POST),
    (r"(?:is |are )?within normal limits", _N, _POST),
    (r"(?:is|are) normal", _N, _POST),
    # uncertainty before the mention
    (r"(?:possible|possibly)", _U, _PRE),
    (r"(?:(?:is|are) (?:also )?)?(?:probable|probably|likely|most likely|presumed|presumably)", _L, _BOTH),
    (r"(?:favou?red|favou?ring)", _L, _PRE),
    (r"(?:favou?red|felt|thought) to (?:represent|be|reflect)", _L, _PRE),
    (r"(?:may|might|could|can) (?:also )?"
     r"(?:represent|reflect|be|indicate|relate to|be due to|be related to)", _U, _PRE),
    (r"(?:can ?not|cannot|can't|could not|difficult to) (?:be )?"
     r"(?:entirely |completely |definitely )?(?:exclude[d]?|rule[d]? out)", _U, _BOTH),
    (r"(?:not|never) (?:been |be )?(?:entirely |completely |definitely )?(?:excluded|ruled out)", _U, _POST),
    # still to be done, not done: "malignancy must be excluded" raises it
    (r"(?:must|should|needs? to|has to|have to|to) be (?:excluded|ruled out)", _U, _POST),
    (r"(?:questionable|question(?: of)?|suspicious (?:for|of)|"
     r"(?:raises )?concern(?:ing)? for|worrisome for)", _U, _PRE),
    (r"suspect(?:ed)?", _U, _BOTH),
    (r"(?:could|may|might) (?:also )?include", _U, _PRE),
    (r"(?:suggestive of|suggesting|suggests|raises the possibility of|possibility of)", _U, _PRE),
    (r"most (?:suggestive of|suggesting)", _L, _PRE),
    (r"(?:differential|differential diagnosis|differential considerations?|considerations?)"
     r" (?:includes?|would include)", _U, _PRE),
    (r"(?:equivocal|consider|considered)", _U, _BOTH),
    (r"(?:borderline|versus|vs\.?)", _L, _BOTH),
    (r"(?:is|are) (?:also )?(?:possible|suspected|questioned|a consideration|considered)", _U, _POST),
    (r"(?:is|are) (?:a |also a )?(?:possibility|possibilities|consideration)", _U, _POST),
    # "most XXXX": de-identified reports (Open-i) lost the "likely" after "most" to the scrubber
    (r"most XXXX", _L, _PRE),
    (r"\?(?=\w)", _U, _PRE),
    (r"\?", _U, _POST),
    # scope termination
    (r"(?:but|however|although|though|whereas|except|which|aside from|apart from)", _T, _BOTH),
    (r"and (?:there|the|this|these|it)", _T, _BOTH),
    (r"[;:]", _T, _BOTH),
)

PRE_WINDOW = 8  # words between a pre-trigger and the mention (fits "no A, B, or C")
LIST_WINDOW = 24  # ... or further, when everything between is a list of findings
POST_WINDOW = 5  # words between the mention and a post-trigger
HISTORY_WINDOW = 4  # words between "history of" and the mention, within one clause

_RANK = {Certainty.PRESENT: 2, Certainty.UNCERTAIN: 1, None: 0}
# how firmly a mention is asserted (Finding.confidence): the mapper's suggestion confidence
PRESENT_CONFIDENCE = 0.95
PROBABLE_CONFIDENCE = 0.8
POSSIBLE_CONFIDENCE = 0.6
NONSPECIFIC_CONFIDENCE = 0.5  # a loose descriptor, however firmly stated


def _compile_triggers() -> tuple[re.Pattern[str], list[tuple[Polarity, Direction]]]:
    """One alternation, longest phrase first, so "no evidence of" beats "no" at the same place.

    Group `t<i>` names the trigger, so one `finditer` finds every trigger in a report.
    """
    ordered = sorted(TRIGGERS, key=lambda t: len(t[0]), reverse=True)
    pattern = _trigger_pattern(ordered, grouped_by_first_char=True)
    return re.compile(pattern, re.IGNORECASE), [(pol, d) for _, pol, d in ordered]


def _trigger_pattern(ordered: list[tuple[str, Polarity, Direction]], grouped_by_first_char: bool) -> str:
    """The triggers' alternation, grouped by first characters (services.common.alternation: the
    same matches, but of the ~55 branches only those that can start with a word's first letters
    are tried there), or plain (kept for the test that checks both agree on real and synthetic
    reports).

    Group `t<i>` names the trigger (`t<i>_<n>` when trigger i occurs in several groups)."""
    word_indices = [i for i, (src, _, _) in enumerate(ordered) if _is_word(src)]
    marks = [f"(?P<t{i}>{src})" for i, (src, _, _) in enumerate(ordered) if not _is_word(src)]
    words = [f"(?P<t{i}>{ordered[i][0]})\\b" for i in word_indices]
    if grouped_by_first_char:
        # branches are parsed one by one, so a branch's group name may repeat across groups only
        # after this renaming: t<i>_<n> for its n-th copy
        copies: dict[int, int] = {}

        def numbered(match: re.Match[str]) -> str:
            index = int(match.group(1))
            copies[index] = copies.get(index, 0) + 1
            return f"(?P<t{index}_{copies[index]}>"

        plain = alternation.grouped(words, re.IGNORECASE)
        if plain is not None:
            words = [re.sub(r"\(\?P<t(\d+)>", numbered, plain)]
    # the look-behind is tested once per position, so word alternatives only run at word starts
    return r"(?<![\w/])(?:" + "|".join(words) + ")|" + "|".join(marks)


def _is_word(src: str) -> bool:
    return src[0].isalpha() or src.startswith("(?:")


_TRIGGER_RE, _TRIGGER_KINDS = _compile_triggers()
# The same pattern without its named groups, for the scan: with ~55 named groups the engine spends
# most of a search resetting them at each position it tries (4-6x the time); the named pattern
# then runs only where the scan found a trigger, to tell which one (the same match there).
_TRIGGER_SCAN_RE = re.compile(re.sub(r"\(\?P<t\d+(?:_\d+)?>", "(?:", _TRIGGER_RE.pattern), re.IGNORECASE)

_SKIPPED_SECTIONS = frozenset({
    "indication", "indications", "history", "clinical history", "clinical information",
    "clinical indication", "clinical data", "reason for exam", "reason for examination",
    "reason for study", "comparison", "comparisons", "technique", "exam", "examination",
    "procedure",
})
_SECTION_NAMES = _SKIPPED_SECTIONS | {"findings", "impression", "impressions", "conclusion", "conclusions",
                                      "summary", "opinion", "report", "result", "results"}
_HEADER_RE = re.compile(r"(?:^|(?<=[.\n]))[ \t]*([A-Za-z][A-Za-z /]{0,38}?)[ \t]*:(?!\d)", re.M)
_ABBREVIATIONS = frozenset("approx dr vs e.g i.e etc mr mrs ms st no fig cf incl resp pt".split())
_SENTENCE_MARK_RE = re.compile(r"[.!?\n]")  # what `_split_region` looks at
_RUN_ON_RE = re.compile(r"[a-z]{3}\.[A-Z]")  # "apex.There": a word of 3+ lowercase letters
_NUMBER_AFTER_RE = re.compile(r"\s*\d")
_LIST_MARKER_RE = re.compile(r"\s*(?:\d{1,2}[.)]|[-*\u2022])\s+")
_NEWLINE_JOIN_MIN = 50  # a line at least this long, followed by lowercase, is a wrapped sentence

_NEGATED_MENTION_RE = re.compile(r"\b(?:not|no|without)\b", re.IGNORECASE)
_HEDGED_MENTION_RE = re.compile(r"\bborderline\b", re.IGNORECASE)
_CLAUSE_BREAK_RE = re.compile(r"[,;:()]|\b(?:with|but|however|which|w/)\b", re.IGNORECASE)
_SIDE_RE = re.compile(
    r"\b(?:(?i:left|lt|right|rt|bilateral(?:ly)?|bibasilar|bibasal|biapical|both|b/l)|L|R)\b"
)
_WORD_RE = re.compile(r"\S+")
_LIST_JOINER_RE = re.compile(r",|\b(?:or|nor|and/or)\b", re.IGNORECASE)
# a verb or a new subject between a negation and a mention ends the negated list
_CLAUSE_VERB_RE = re.compile(
    r"\b(?:is|are|was|were|has|have|had|there|which|with|shows?|demonstrates?|seen|noted|present)\b",
    re.IGNORECASE,
)
# "Name: value" where Name names a finding; the value reads as absent when it opens with these
# (a dash between blanks separates them too in typed templates: "Pneumothorax - none.")
_FIELD_NAME_RE = re.compile(r"[ \t]*([A-Za-z][A-Za-z /]{0,38}?)(?:[ \t]*:(?!\d)|[ \t]+[-\u2013\u2014][ \t]+)")
_DASH_SEPARATOR_RE = re.compile(r"[-\u2013\u2014](?=[ \t])")  # the blank before it is looked at after
_HYPHEN_SEPARATOR_RE = re.compile(r"-(?=[ \t])")
FIELD_NAME_LENGTH = 40  # characters: a field's name is at most this long (_FIELD_NAME_RE)
_FIELD_SEPARATOR_RE = re.compile(r":|[ \t][-\u2013\u2014][ \t]")
_FIELD_ABSENT_RE = re.compile(
    # "no" alone: "Pneumothorax: No."; "no change" is a stable finding, "No pneumothorax" a trigger
    r"\s*(?:none|no(?=\s*(?:[.;,]|$))|nil|absent|negative|normal|unremarkable|resolved"
    r"|not (?:seen|present|identified|visuali[sz]ed|demonstrated|detected|evident|appreciated))\b",
    re.IGNORECASE,
)
# a checklist question's answer ("Pneumothorax? No."): one word (or "not seen"), then a stop or a comma
_ANSWER_RE = re.compile(
    r"(?:yes|no|none|nil|negative|positive|present|absent|not (?:seen|present|identified)"
    r"|possibl[ey]|probabl[ey]|likely|unlikely)(?=[ \t]*(?:[.,;!]|$))",
    re.IGNORECASE,
)
# a resolution told as an aside right after the finding: "Right pneumothorax, now resolved.",
# "Left effusion (since resolved)", "Chest tube, which has been removed". A comma ends every
# post-trigger's scope, so these were read as present. Not "nearly / largely resolved" (some is
# left) nor "resolved on the right" (a side of a bilateral finding).
_RESOLVED_ASIDE_RE = re.compile(
    r"[ \t]*(?:[,(]|[-\u2013\u2014](?=[ \t]))[ \t]*(?:(?:which|that)[ \t]+)?(?:(?:has|have)[ \t]+)?"
    r"(?:(?:now|since|subsequently|completely|also)[ \t]+){0,2}(?:been[ \t]+)?"
    r"(?:resolved|cleared|removed|no longer (?:seen|visible|visualized|present|identified|evident|apparent))\b"
    r"(?![ \t]+(?:on|in|at|from)\b)",
    re.IGNORECASE,
)
FIELD_VALUE_WINDOW = 2  # words before a hedge that still opens a field's value ("small, possibly" does not)
ATTRIBUTION_WINDOW = 6  # words between a descriptor and the finding it is attributed to
# "opacity compatible with / consistent with / likely / representing ... atelectasis"; `XXXX` is a
# de-identification gap, which in real reports most often stands where "likely" was
_ATTRIBUTION_RE = re.compile(
    r"\b(?:compatible|consistent|concordant|in keeping) with\b|\battributable to\b|"
    r"\b(?:likely|probably|probable|presumably|"
    r"represent(?:s|ing)?|reflect(?:s|ing)?|suggest(?:s|ing|ive of)|favou?r(?:s|ed|ing)?|"
    r"due to|secondary to|related to|from)\b|\bXXXX\b",
    re.IGNORECASE,
)
_ALTERNATIVE_RE = re.compile(
    r"/|\b(?:or|versus|vs|and)\b|(?<!compatible )(?<!consistent )(?<!concordant )(?<!keeping )\bwith\b",
    re.IGNORECASE,
)
# what a loose descriptor is often explained as instead of disease, right after the linker
_LOOK_ALIKE_RE = re.compile(
    r"\W*(?:(?:a|an|the|prior|previous|old|healed|chronic|overlying|benign|bilateral|"
    r"calcified|prominent|patient's|XXXX)\W+){0,3}"
    r"(?:nipple|granulom\w*|bone island|(?:overlying )?soft tissue|(?:epicardial )?fat\b|fat pad|"
    r"vessels?\b|vascular|costochondral|skin fold|artifact|overlap|superimpos\w*|scar(?:ring|s)?\b)",
    re.IGNORECASE,
)
# after a comma, a verb or a new subject starts a clause that a negation before it does not reach
_NEW_CLAUSE_RE = re.compile(r"\b(?:the|this|these|it)\b", re.IGNORECASE)
_PLURAL_VERB_RE = re.compile(r"(?:have|are|were)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Trigger:
    start: int
    end: int
    polarity: Polarity
    direction: Direction


@dataclass(frozen=True)
class Mention:
    label: LabelDef
    start: int
    end: int
    sentence: tuple[int, int]
    certainty: Certainty | None  # None: negated
    confidence: float = 0.0  # 0 when negated
    nonspecific: bool = False  # a loose descriptor ("airspace opacity")
    value: tuple[int, int] | None = None  # a template field's value ("Pneumothorax: small right apical.")


def extract_findings(report: str, taxonomy: Taxonomy) -> list[Finding]:
    """Present or uncertain findings in `report`, one per (label, evidence sentence)."""
    sentences = split_sentences(report)
    if not sentences:
        return []
    triggers = find_triggers(report)
    lowered = LoweredText(report)
    mentions: list[Mention] = []
    for label in taxonomy.labels:
        mentions.extend(_label_mentions(report, label, sentences, triggers, lowered))
    spanning = _spanning_phrases(taxonomy)
    if _names_a_field(report, spanning):
        mentions.extend(_name_and_value_mentions(report, spanning, sentences, triggers, mentions))
    kept = _strongest_per_label(_drop_attributed_descriptors(report, mentions))
    return [_to_finding(report, m) for m in sorted(kept, key=lambda m: (m.start, m.label.id))]


def _label_mentions(
    report: str, label: LabelDef, sentences: list[tuple[int, int]], triggers: list[Trigger], lowered: LoweredText
) -> list[Mention]:
    sentence_starts = [s for s, _ in sentences]
    found = []
    for start, end in label.mentions(report, lowered):
        index = bisect_right(sentence_starts, start) - 1
        inside = index >= 0 and end <= sentences[index][1]
        field = _field(report, start, end, sentences, index, inside, triggers)
        value = None
        if field is not None:  # "Pneumothorax: none.": the value says whether the named finding is there
            sentence, value = field
            certainty, confidence = _assess_field_value(report, value, triggers)
        elif not inside:
            continue  # inside a skipped section, or straddling two sentences
        else:
            sentence = sentences[index]
            certainty, confidence = assess_mention(report, start, end, sentence, triggers)
        nonspecific = label.is_nonspecific(report, start, end)
        if nonspecific and certainty is not None:
            confidence = min(confidence, NONSPECIFIC_CONFIDENCE)
        found.append(Mention(label, start, end, sentence, certainty, confidence, nonspecific, value))
    return found


@dataclass(frozen=True)
class _Spanning:
    """A taxonomy's phrases with a gap ("heart ... enlarged"): only these can run from a field's
    name into its value, the gap taking the separator's place."""

    firsts: re.Pattern[str] | None  # the phrases' first parts ("heart", "cardiac silhouette")
    labels: tuple[tuple[LabelDef, re.Pattern[str]], ...]


_SPANNING: dict[int, tuple[Taxonomy, _Spanning]] = {}


def _spanning_phrases(taxonomy: Taxonomy) -> _Spanning:
    cached = _SPANNING.get(id(taxonomy))
    if cached is not None and cached[0] is taxonomy:
        return cached[1]
    labels, firsts = [], set()
    for label in taxonomy.labels:
        gapped = tuple(p for p in label.synonyms + label.nonspecific if "..." in p)
        pattern = compile_phrases(gapped)
        if pattern is not None:
            labels.append((label, pattern))
            firsts.update(p.split("...")[0].strip() for p in gapped)
    spanning = _Spanning(compile_phrases(tuple(f for f in firsts if f)), tuple(labels))
    _SPANNING[id(taxonomy)] = (taxonomy, spanning)
    return spanning


def _names_a_field(report: str, spanning: _Spanning) -> bool:
    """Whether a phrase's first part is in a field's name somewhere ("Heart size:"). Looked for
    only before each separator: a report has a few (its section headers), while a search of the
    whole report for the first parts cost ~15 us (most reports say "heart")."""
    if spanning.firsts is None:
        return False
    for end in _separator_positions(report):
        start = max(0, end - FIELD_NAME_LENGTH)
        start = max(start, report.rfind("\n", start, end) + 1, report.rfind(".", start, end) + 1)
        if report[start:end].strip().lower() in _SECTION_NAMES:
            continue  # most separators end a section's header, which names no finding
        if spanning.firsts.search(report, start, end):
            return True
    return False


def _separator_positions(report: str) -> list[int]:
    """Where _FIELD_SEPARATOR_RE matches (its colon or its dash), found by str.find and a regex
    that starts on the dash (a regex opening with a class is a fast scan; the separator's own
    tries both branches at every blank, ~7 us a report)."""
    found, colon = [], report.find(":")
    while colon >= 0:
        found.append(colon)
        colon = report.find(":", colon + 1)
    # a class with non-ASCII dashes is scanned ~5x slower than a plain "-": used only when needed
    dashes = _DASH_SEPARATOR_RE if "\u2013" in report or "\u2014" in report else _HYPHEN_SEPARATOR_RE
    found.extend(m.start() - 1 for m in dashes.finditer(report, 1) if report[m.start() - 1] in " \t")
    return found


def _name_and_value_mentions(
    report: str, spanning: _Spanning, sentences: list[tuple[int, int]], triggers: list[Trigger],
    mentions: list[Mention],
) -> list[Mention]:
    """Findings named by a field's name and value read together: "Heart: mildly enlarged." is
    "heart ... enlarged", "Mediastinum: widened." is "mediastinum ... widened". A taxonomy phrase
    never crosses the colon (nor the dash of "Heart - enlarged"), so these were lost; the name
    alone names an organ, not a finding. Only a phrase that starts in the name and ends in the
    value counts, and not where the value names the same finding itself ("Heart: the heart is
    enlarged"); the value's opening hedge or absence grades it as any field's ("Heart: possibly
    enlarged"), a negation inside the phrase negates it ("Heart: not enlarged")."""
    found = []
    for name, value, evidence in _fields(report, sentences, triggers):
        # the name and the value as one phrase, a blank where the separator was
        text = report[name[0] : name[1]] + " " + report[value[0] : value[1]]
        shift = value[0] - (name[1] - name[0] + 1)  # text offset past the name -> report offset
        for label, pattern in spanning.labels:
            for match in pattern.finditer(text):
                start, end = match.span()
                if start >= name[1] - name[0] or end <= name[1] - name[0] + 1:
                    continue  # inside the name or inside the value: the usual reading has it
                excluded = label.exclusion_pattern
                if excluded is not None and any(
                        x.start() < end and start < x.end() for x in excluded.finditer(text)):
                    continue
                r_start, r_end = name[0] + start, end + shift
                if any(m.label is label and value[0] <= m.start < value[1] for m in mentions):
                    continue
                if _NEGATED_MENTION_RE.search(text, start, end):
                    certainty, confidence = None, 0.0
                else:
                    certainty, confidence = _assess_field_value(report, value, triggers)
                nonspecific = label.is_nonspecific(text, start, end)
                if nonspecific and certainty is not None:
                    confidence = min(confidence, NONSPECIFIC_CONFIDENCE)
                found.append(Mention(label, r_start, r_end, evidence, certainty, confidence, nonspecific, value))
    return found


def _fields(
    report: str, sentences: list[tuple[int, int]], triggers: list[Trigger]
) -> list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
    """(name, value, evidence) spans of the report's template fields ("Heart: mildly enlarged."),
    inline at a sentence's start or cut like a section header at a line's start."""
    fields = []
    for s, e in sentences:
        if _FIELD_SEPARATOR_RE.search(report, s, min(e, s + 42)):  # inline: "IMPRESSION: Heart: enlarged."
            name = _FIELD_NAME_RE.match(report, s, e)
            if name is not None and name.end() < e and not _has_trigger(triggers, s, name.end(1)):
                fields.append(((name.start(1), name.end(1)), (name.end(), e), (s, e)))
        line = max(report.rfind("\n", 0, s), report.rfind(".", 0, s)) + 1
        header = _HEADER_RE.match(report, line)
        if (header is not None and header.end() <= s and not report[header.end() : s].strip()
                and len(header.group(1).split()) <= 4
                and header.group(1).strip().lower() not in _SECTION_NAMES
                and not _has_trigger(triggers, header.start(1), header.end(1))):
            fields.append(((header.start(1), header.end(1)), (s, e), (header.start(1), e)))
    return fields


def _field(
    report: str, start: int, end: int, sentences: list[tuple[int, int]], index: int, inside: bool,
    triggers: list[Trigger],
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(evidence, value) spans when the mention names a template field ("Pleural effusion: small
    left.", "Pneumothorax: None."), else None. A colon ends every trigger's scope, and a field at
    the start of a line is cut as a section header, so without this the value was never read:
    the field's finding was dropped (or, inline, suggested whatever its value said). A name with
    a trigger of its own ("Possible pneumonia: right lower lobe") is read as a sentence."""
    if inside:  # "IMPRESSION: Effusion: none. ...": the field opens the sentence
        answered = _answered_question(report, sentences, index)
        if answered is not None:
            return answered
        s, e = sentences[index]
        if _FIELD_SEPARATOR_RE.search(report, s, min(e, end + 42)) is None:
            return None  # most sentences: no field separator where a field's name could end
        name = _FIELD_NAME_RE.match(report, s, e)
        if name is None or end > name.end(1) or _has_trigger(triggers, s, name.end(1)):
            return None
        return ((s, e), (name.end(), e)) if name.end() < e else None
    # a field at the start of a line (or after a full stop) is cut like a section header: its
    # value is the sentence right after it
    line = max(report.rfind("\n", 0, start), report.rfind(".", 0, start)) + 1
    name = _HEADER_RE.match(report, line)
    if (name is None or not name.start(1) <= start < end <= name.end(1) or len(name.group(1).split()) > 4
            or name.group(1).strip().lower() in _SKIPPED_SECTIONS
            or _has_trigger(triggers, name.start(1), name.end(1))):
        return None
    following = index + 1
    if following >= len(sentences) or report[name.end() : sentences[following][0]].strip():
        return None  # no value: the next text is skipped or is not right after the colon
    return (name.start(1), sentences[following][1]), sentences[following]


def _answered_question(
    report: str, sentences: list[tuple[int, int]], index: int
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(evidence, answer) spans when the mention's sentence is a question answered right after it
    ("Pneumothorax? No.", "Effusion? Yes, small left."): a checklist's question is read from its
    answer like a field from its value; the "?" alone would raise it as a hedge. An unanswered
    question, or one followed by a sentence of its own ("Pneumonia? Recommend a lateral view."),
    stays a hedge."""
    s, e = sentences[index]
    if report[e - 1] != "?" or index + 1 >= len(sentences):
        return None
    answer = sentences[index + 1]
    if report[e : answer[0]].strip() or not _ANSWER_RE.match(report, answer[0], answer[1]):
        return None
    return (s, answer[1]), answer


def _value_laterality(report: str, value: tuple[int, int]) -> Laterality:
    """The side a field's value gives ("Pneumothorax: small right apical."): its first clause that
    names one, a bilateral word winning there, else the first side word."""
    start = value[0]
    for end in [m.start() for m in _CLAUSE_BREAK_RE.finditer(report, *value)] + [value[1]]:
        sides = [_side(m.group(0)) for m in _SIDE_RE.finditer(report, start, end)]
        if sides:
            return Laterality.BILATERAL if Laterality.BILATERAL in sides else sides[0]
        start = end
    return Laterality.NONE


def _has_trigger(triggers: list[Trigger], start: int, end: int) -> bool:
    return any(start <= t.start < end and t.polarity is not Polarity.PSEUDO for t in triggers)


def _assess_field_value(report: str, value: tuple[int, int], triggers: list[Trigger]) -> tuple[Certainty | None, float]:
    """The certainty of a field's finding from its value: absent ("none", "negative", "not seen"),
    hedged by a trigger that opens it ("possible small left"), else present ("small left")."""
    start, end = value
    if _FIELD_ABSENT_RE.match(report, start, end):
        return None, 0.0
    for t in triggers:
        if t.start < start or t.polarity is Polarity.PSEUDO:
            continue
        if (t.start >= end or t.polarity is Polarity.TERMINATION
                or len(report[start : t.start].split()) > FIELD_VALUE_WINDOW
                or _CLAUSE_BREAK_RE.search(report, start, t.start)):
            break
        if t.polarity in (Polarity.NEGATED, Polarity.HISTORICAL):
            return None, 0.0
        if t.polarity is Polarity.UNCERTAIN:
            return Certainty.UNCERTAIN, POSSIBLE_CONFIDENCE
        return Certainty.UNCERTAIN, PROBABLE_CONFIDENCE
    return Certainty.PRESENT, PRESENT_CONFIDENCE


def _drop_attributed_descriptors(report: str, mentions: list[Mention]) -> list[Mention]:
    """Drop loose descriptors that their sentence attributes to a specific finding.

    "Airspace opacities compatible with discoid atelectasis", "basilar airspace disease, likely
    atelectasis": the opacity is the atelectasis, so it is not also suggested as pneumonia; and
    in "costophrenic blunting may represent a small effusion" the effusion is only possible. A
    finding joined by "and"/"with" is a second finding, and one joined by "or"/"versus" is an
    alternative; both leave the descriptor alone ("airspace disease and effusion", "may
    represent atelectasis or aspiration"). A descriptor explained away as a look-alike
    ("nodular opacity, likely a nipple shadow", "consistent with granulomatous disease") goes too.
    """
    specific = [m for m in mentions if m.certainty is not None and not m.nonspecific]
    kept = []
    for m in mentions:
        if m.nonspecific and (
            _explained_as_look_alike(report, m)
            or any(other.sentence == m.sentence and _attributes(report, m, other) for other in specific)
        ):
            continue
        kept.append(m)
    return kept


def _explained_as_look_alike(report: str, descriptor: Mention) -> bool:
    after = report[descriptor.end : descriptor.sentence[1]]
    link = _ATTRIBUTION_RE.search(after)
    if link is None or len(after[: link.start()].split()) > ATTRIBUTION_WINDOW:
        return False
    if _ALTERNATIVE_RE.search(after, 0, link.start()):
        return False
    end = link.end()
    while chained := _ATTRIBUTION_RE.match(after, len(after) - len(after[end:].lstrip())):
        end = chained.end()  # linkers in a row: "most likely represents a nipple shadow"
    return _LOOK_ALIKE_RE.match(after, end) is not None


def _attributes(report: str, descriptor: Mention, finding: Mention) -> bool:
    if finding.start < descriptor.end:
        return False
    gap = report[descriptor.end : finding.start]
    return (
        len(gap.split()) <= ATTRIBUTION_WINDOW
        and _ATTRIBUTION_RE.search(gap) is not None
        and _ALTERNATIVE_RE.search(gap) is None
    )


def _strongest_per_label(mentions: list[Mention]) -> list[Mention]:
    """Per label, the mentions of the strongest certainty and the most confident ones.

    Positive beats uncertain (one firm mention settles the flag), and the most confident
    mention is kept too, so the suggestion's confidence is the firmest assertion: in "airspace
    opacity concerning for pneumonia" the opacity is firm but loose, the pneumonia hedged.
    Negated mentions never count; one mention per label, sentence and certainty.
    """
    best_rank: dict[str, int] = {}
    best_confidence: dict[str, float] = {}
    for m in mentions:
        best_rank[m.label.id] = max(best_rank.get(m.label.id, 0), _RANK[m.certainty])
        best_confidence[m.label.id] = max(best_confidence.get(m.label.id, 0.0), m.confidence)
    kept: dict[tuple[str, tuple[int, int], Certainty], Mention] = {}
    for m in sorted(mentions, key=lambda m: -m.confidence):
        if m.certainty is None:
            continue
        if _RANK[m.certainty] == best_rank[m.label.id] or m.confidence == best_confidence[m.label.id]:
            kept.setdefault((m.label.id, m.sentence, m.certainty), m)
    return list(kept.values())


def _to_finding(report: str, m: Mention) -> Finding:
    start, end = m.sentence
    side = laterality(report, m.start, m.end, m.sentence)
    if side is Laterality.NONE and m.value is not None:
        # a field's name is its own clause ("Right pleural effusion: small"); else its value says
        side = _value_laterality(report, m.value)
    return Finding(
        text=report[m.start : m.end],
        certainty=m.certainty or Certainty.PRESENT,
        laterality=side,
        evidence=report[start:end],
        evidence_start=start,
        evidence_end=end,
        label_hint=m.label.id,
        confidence=m.confidence,
    )


# --- sentences ----------------------------------------------------------------------------


def split_sentences(report: str) -> list[tuple[int, int]]:
    """Character spans of the sentences that describe the image (request sections dropped)."""
    spans: list[tuple[int, int]] = []
    for start, end in _kept_regions(report):
        spans.extend(_split_region(report, start, end))
    return spans


def _kept_regions(report: str) -> list[tuple[int, int]]:
    """Regions outside indication/history/comparison/technique sections.

    A skipped section ends at the next header or at the end of its line, whichever comes first,
    because single-line reports often run "Comparison: ... Findings ..." together without one.
    """
    headers = [m for m in _HEADER_RE.finditer(report) if len(m.group(1).split()) <= 4]
    regions, cursor = [], 0
    for i, header in enumerate(headers):
        regions.append((cursor, header.start()))
        next_start = headers[i + 1].start() if i + 1 < len(headers) else len(report)
        cursor = header.end()
        if header.group(1).strip().lower() in _SKIPPED_SECTIONS:
            newline = report.find("\n", cursor, next_start)
            cursor = next_start if newline < 0 else newline
    regions.append((cursor, len(report)))
    return [(s, e) for s, e in regions if e > s]


def _split_region(report: str, start: int, end: int) -> list[tuple[int, int]]:
    cuts = [start]
    # only the characters that may end a sentence or a line, found by the regex engine: a Python
    # loop over every character of the report cost ~0.05 ms per report (the same cuts)
    for mark in _SENTENCE_MARK_RE.finditer(report, start, end):
        i = mark.start()
        char = report[i]
        if char in ".!?" and _ends_sentence(report, start, i, end):
            cuts.append(i + 1)
        elif char == "\n" and _breaks_line(report, cuts[-1], i, end):
            cuts.append(i + 1)
    cuts.append(end)
    spans = []
    for s, e in zip(cuts, cuts[1:], strict=False):
        s, e = _trim(report, s, e)
        if e > s:
            spans.append((s, e))
    return spans


def _ends_sentence(report: str, region_start: int, i: int, end: int) -> bool:
    if i + 1 < end and not report[i + 1].isspace():
        # "4.5 cm", "e.g", "?PNA" go on; a typed-together "lung apex.There are" is two sentences
        return report[i] == "." and _RUN_ON_RE.match(report, max(region_start, i - 3), i + 2) is not None
    if report[i] != ".":
        return True
    before = report[max(region_start, i - 12) : i]
    token = before.rsplit(None, 1)[-1] if before.strip() else ""
    if token.lower().rstrip(".") in _ABBREVIATIONS:
        # "No." is "number" only before one ("tube no. 5"); a checklist's answer "No." ends
        return token.lower() == "no" and not _NUMBER_AFTER_RE.match(report, i + 1, end)
    if token.isdigit() and len(token) <= 2:
        preceding = report[region_start : i - len(token)].rstrip()
        return bool(preceding) and preceding[-1] not in ".:\n"  # "1." list marker
    return True


def _breaks_line(report: str, line_start: int, i: int, end: int) -> bool:
    """A newline ends a sentence unless a long line wraps onto a lowercase continuation."""
    line = report[report.rfind("\n", line_start, i) + 1 : i].strip()
    following = report[i + 1 : end].lstrip(" \t")
    if not line or not following:
        return True
    return not (len(line) >= _NEWLINE_JOIN_MIN and following[0].islower())


def _trim(report: str, s: int, e: int) -> tuple[int, int]:
    while s < e and report[s].isspace():
        s += 1
    marker = _LIST_MARKER_RE.match(report, s, e)
    if marker:
        s = marker.end()
    while e > s and report[e - 1].isspace():
        e -= 1
    return s, e


# --- negation and uncertainty -------------------------------------------------------------


def find_triggers(report: str) -> list[Trigger]:
    """All trigger phrases in the report; overlapping ones resolved longest-first by the regex."""
    found = []
    for m in _TRIGGER_SCAN_RE.finditer(report):
        named = _TRIGGER_RE.match(report, m.start())
        assert named is not None and named.end() == m.end()  # one pattern, with and without names
        polarity, direction = _TRIGGER_KINDS[int(named.lastgroup[1:].partition("_")[0])]  # type: ignore[index]
        found.append(Trigger(m.start(), m.end(), polarity, direction))
    return found


def classify_mention(
    report: str, start: int, end: int, sentence: tuple[int, int], triggers: list[Trigger]
) -> Certainty | None:
    """Certainty of one mention, or None when it is negated (absent)."""
    return assess_mention(report, start, end, sentence, triggers)[0]


def assess_mention(
    report: str, start: int, end: int, sentence: tuple[int, int], triggers: list[Trigger]
) -> tuple[Certainty | None, float]:
    """Certainty of one mention (None: negated) and how firmly it is asserted (0 when negated)."""
    if _NEGATED_MENTION_RE.search(report, start, end):
        return None, 0.0  # "heart is not enlarged" matched "heart ... enlarged"
    if _RESOLVED_ASIDE_RE.match(report, end, sentence[1]):
        return None, 0.0  # "Right pneumothorax, now resolved."
    hedged_inside = _HEDGED_MENTION_RE.search(report, start, end) is not None  # "borderline heart size"
    before = _nearest_pre(report, start, sentence, triggers)
    after = _nearest_post(report, end, sentence, triggers)
    polarities = {t.polarity for t in (before, after) if t is not None}
    if before is not None and before.polarity is Polarity.PROBABLE:
        # "question of atelectasis versus infiltrate": the weaker hedge governs the whole pair
        outer = _nearest_pre(report, before.start, sentence, triggers)
        if outer is not None and outer.polarity is Polarity.UNCERTAIN:
            polarities.add(outer.polarity)
    if Polarity.NEGATED in polarities or Polarity.HISTORICAL in polarities:
        return None, 0.0
    if Polarity.UNCERTAIN in polarities:
        return Certainty.UNCERTAIN, POSSIBLE_CONFIDENCE
    if Polarity.PROBABLE in polarities or hedged_inside:
        return Certainty.UNCERTAIN, PROBABLE_CONFIDENCE
    return Certainty.PRESENT, PRESENT_CONFIDENCE


def _nearest_pre(
    report: str, start: int, sentence: tuple[int, int], triggers: list[Trigger]
) -> Trigger | None:
    """The closest trigger before the mention, if its forward scope reaches the mention.

    The scope is PRE_WINDOW words, or up to LIST_WINDOW over a list of findings: "no A, B, C
    or D" negates D however long the list, but "no A; the heart is enlarged" stops at the verb.
    """
    for t in reversed(triggers):
        if t.start < sentence[0]:
            return None
        if t.end > start or t.polarity is Polarity.PSEUDO:
            continue  # after (or overlapping) the mention, or only looks like a trigger
        if t.polarity is Polarity.TERMINATION or t.direction is Direction.POST:
            return None
        gap = report[t.end : start]
        words = len(gap.split())
        if t.polarity is Polarity.HISTORICAL:
            # "history of lung cancer" is not a finding; "history of cancer, new nodule" is
            return t if words <= HISTORY_WINDOW and not _CLAUSE_BREAK_RE.search(gap) else None
        tail = gap.rsplit(",", 1)[1] if "," in gap else None
        if tail is not None and (_CLAUSE_VERB_RE.search(tail) or _NEW_CLAUSE_RE.search(tail)):
            return None  # "no effusion, the heart is enlarged": a new clause after the last comma
        if words > PRE_WINDOW and not (words <= LIST_WINDOW and _is_list(gap)):
            return None
        return t
    return None


def _is_list(gap: str) -> bool:
    """Whether the words between a trigger and a mention are the earlier items of a list."""
    return _LIST_JOINER_RE.search(gap) is not None and _CLAUSE_VERB_RE.search(gap) is None


def _nearest_post(
    report: str, end: int, sentence: tuple[int, int], triggers: list[Trigger]
) -> Trigger | None:
    """The closest trigger after the mention, in the same clause, if it looks back at it."""
    for t in triggers:
        if t.start < end or t.polarity is Polarity.PSEUDO:
            continue
        if t.start >= sentence[1] or t.polarity is Polarity.TERMINATION:
            return None
        if t.direction is Direction.PRE:
            return None  # a new scope starts here
        gap = report[end : t.start]
        if _CLAUSE_BREAK_RE.search(gap) or len(gap.split()) > POST_WINDOW:
            return None
        if " and " in gap and not _PLURAL_VERB_RE.match(report, t.start):
            return None  # "X and Y have been removed" covers X; "X and Y removed" is ambiguous
        return t
    return None


# --- laterality ---------------------------------------------------------------------------


def laterality(report: str, start: int, end: int, sentence: tuple[int, int]) -> Laterality:
    """Side of a mention from its clause: a bilateral word wins, else the nearest side word."""
    clause_start, clause_end = _clause(report, start, end, sentence)
    sides = [(m.start(), _side(m.group(0))) for m in _SIDE_RE.finditer(report, clause_start, clause_end)]
    if not sides:
        return Laterality.NONE
    if Laterality.BILATERAL in {side for _, side in sides}:
        return Laterality.BILATERAL
    preceding = [side for pos, side in sides if pos < start]
    return preceding[-1] if preceding else sides[0][1]


def _clause(report: str, start: int, end: int, sentence: tuple[int, int]) -> tuple[int, int]:
    clause_start, clause_end = sentence
    for m in _CLAUSE_BREAK_RE.finditer(report, sentence[0], sentence[1]):
        if m.end() <= start:
            clause_start = m.end()
        elif m.start() >= end:
            clause_end = m.start()
            break
    return clause_start, clause_end


def _side(word: str) -> Laterality:
    lowered = word.lower()
    if lowered in ("left", "lt", "l"):
        return Laterality.LEFT
    if lowered in ("right", "rt", "r"):
        return Laterality.RIGHT
    return Laterality.BILATERAL
