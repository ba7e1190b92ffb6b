"""Versioned label taxonomies, loaded from `services/common/taxonomies/<name>.yaml`.

A taxonomy is the contract between report understanding, review and release: every suggested
label must be one of its ids, and its `version` is recorded with every suggestion so a benchmark
can always say which label definitions it was curated against.

Each label carries mention phrases (`synonyms`), descriptors that name it only loosely
(`nonspecific`: "airspace opacity" may be pneumonia, atelectasis or edema) and look-alike phrases
that must not trigger it (`exclusions`). The phrase syntax is documented at the top of `taxonomies/cxr.yaml`; it is
compiled here once so that every backend (rule extractor, lexicon mapper) reads phrases the same
way. Protocol-specific structure a label list cannot express (e.g. lumbar conditions x levels x
grades) goes in the free-form `extra` mapping of the taxonomy or of a label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from services.common.alternation import FILTER_KEY_LENGTH, LoweredText, keys
from services.common.alternation import grouped as alternation_grouped

TAXONOMY_DIR = Path(__file__).parent / "taxonomies"
_GAP = r"(?:[ \t\n]+[\w/'-]+){0,3}[ \t\n]+"  # "...": up to three intervening words
_NAME = re.compile(r"^[a-z0-9_-]+$")


def phrase_pattern(phrase: str) -> str:
    """Regex source for one taxonomy phrase (syntax: see `taxonomies/cxr.yaml`)."""
    parts = [part.strip() for part in phrase.lower().split("...")]
    compiled = [_words_pattern(part) for part in parts if part]
    return r"\b" + _GAP.join(compiled) + r"(?:s|es)?\b"


def _words_pattern(words: str) -> str:
    tokens = [re.escape(token).replace(r"\-", "[- ]?") for token in words.split()]
    return r"[ \t\n-]+".join(tokens)


def compile_phrases(phrases: tuple[str, ...], grouped_by_first_char: bool = True) -> re.Pattern[str] | None:
    """One alternation for a phrase list, longest phrase first so it wins at a shared start.

    Grouped by first characters (services.common.alternation): the same matches, but at each word
    start only the phrases that can start with its first letters are tried.
    `grouped_by_first_char=False` gives the plain alternation, for the test that checks both agree."""
    if not phrases:
        return None
    ordered = [phrase_pattern(p) for p in sorted(phrases, key=len, reverse=True)]
    alternation = (alternation_grouped(ordered, re.IGNORECASE) if grouped_by_first_char else None) or "|".join(ordered)
    # the look-behind is tested once per position, so the alternatives only run at word starts
    return re.compile(rf"(?<!\w)(?:{alternation})", re.IGNORECASE)


def _filter_keys(phrases: tuple[str, ...]) -> tuple[str, ...] | None:
    """The phrases' keys for `LoweredText.lacks`, None when a phrase's start cannot be told."""
    found: set[str] = set()
    for phrase in phrases:
        phrase_keys = keys(phrase_pattern(phrase), re.IGNORECASE, FILTER_KEY_LENGTH)
        if phrase_keys is None:
            return None
        found |= phrase_keys
    return LoweredText.filter_keys(frozenset(found))


@dataclass(frozen=True)
class LabelDef:
    """One benchmark label: what it means and which report phrases name it."""

    id: str
    name: str
    definition: str
    synonyms: tuple[str, ...]
    exclusions: tuple[str, ...] = ()
    nonspecific: tuple[str, ...] = ()  # descriptors that name the label loosely; also mentions
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @cached_property
    def mention_pattern(self) -> re.Pattern[str] | None:
        return compile_phrases(self.synonyms + self.nonspecific)

    @cached_property
    def nonspecific_pattern(self) -> re.Pattern[str] | None:
        return compile_phrases(self.nonspecific)

    def is_nonspecific(self, text: str, start: int, end: int) -> bool:
        """Whether the mention text[start:end] is one of the label's loose descriptors."""
        pattern = self.nonspecific_pattern
        return pattern is not None and pattern.fullmatch(text, start, end) is not None

    @cached_property
    def exclusion_pattern(self) -> re.Pattern[str] | None:
        return compile_phrases(self.exclusions)

    @cached_property
    def mention_keys(self) -> tuple[str, ...] | None:
        """What every mention holds at its start (services.common.alternation), None when unknown."""
        return _filter_keys(self.synonyms + self.nonspecific)

    @cached_property
    def exclusion_keys(self) -> tuple[str, ...] | None:
        return _filter_keys(self.exclusions)

    def mentions(self, text: str, lowered: LoweredText | None = None) -> list[tuple[int, int]]:
        """Character spans in `text` that name this label, minus spans inside an exclusion.

        `lowered` (the text's, made once for all labels) skips the scan of a text that holds none
        of the phrases' first words (up to 8 letters; `LoweredText`): most labels are not named in
        most reports, and the result is the same. Where one of them occurs, the scan starts at the
        first of them (`LoweredText.first`): no match starts before it, so the spans are the same."""
        if self.mention_pattern is None:
            return []
        start = 0 if lowered is None else lowered.first(self.mention_keys)
        if start < 0:
            return []
        spans = [m.span() for m in self.mention_pattern.finditer(text, start)]
        if not spans:
            return spans
        excluded = self._excluded_spans(text, lowered)
        return [(s, e) for s, e in spans if not any(xs < e and s < xe for xs, xe in excluded)]

    def _excluded_spans(self, text: str, lowered: LoweredText | None) -> list[tuple[int, int]]:
        if self.exclusion_pattern is None:
            return []
        start = 0 if lowered is None else lowered.first(self.exclusion_keys)
        if start < 0:
            return []
        return [m.span() for m in self.exclusion_pattern.finditer(text, start)]


@dataclass(frozen=True)
class Taxonomy:
    """A named, versioned label set for one curation protocol."""

    name: str
    version: str
    protocol: str
    labels: tuple[LabelDef, ...]
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def label_ids(self) -> tuple[str, ...]:
        return tuple(label.id for label in self.labels)

    def get(self, label_id: str) -> LabelDef | None:
        return self._by_id.get(label_id)

    def __contains__(self, label_id: object) -> bool:
        return label_id in self._by_id

    @cached_property
    def _by_id(self) -> dict[str, LabelDef]:
        return {label.id: label for label in self.labels}

    def match_labels(self, text: str) -> list[str]:
        """Label ids (taxonomy order) whose mention phrases occur in `text`; no negation logic."""
        return [label.id for label in self.labels if label.mentions(text)]


def load_taxonomy(name: str = "cxr") -> Taxonomy:
    """The taxonomy `taxonomies/<name>.yaml`, loaded once per process and shared."""
    return _load_cached(name)


@cache
def _load_cached(name: str) -> Taxonomy:
    if not _NAME.match(name):
        raise ValueError(f"invalid taxonomy name {name!r}")
    path = TAXONOMY_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in TAXONOMY_DIR.glob("*.yaml"))
        raise ValueError(f"unknown taxonomy {name!r}; known: {', '.join(known)}")
    return read_taxonomy(path)


def read_taxonomy(path: Path) -> Taxonomy:
    """Read and validate one taxonomy file (uncached; the file stem is the taxonomy name)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"taxonomy {path.stem!r}: invalid YAML: {exc}") from exc
    return parse_taxonomy(path.stem, raw)


def parse_taxonomy(name: str, raw: Any) -> Taxonomy:
    """Build a Taxonomy from the parsed YAML document, with errors that name the bad field."""
    if not isinstance(raw, dict):
        raise ValueError(f"taxonomy {name!r}: top level must be a mapping")
    version = _required_str(raw, "version", name)
    protocol = _required_str(raw, "protocol", name)
    labels_raw = raw.get("labels")
    if not isinstance(labels_raw, list) or not labels_raw:
        raise ValueError(f"taxonomy {name!r}: 'labels' must be a non-empty list")
    labels = tuple(_parse_label(item, f"{name}.labels[{i}]") for i, item in enumerate(labels_raw))
    ids = [label.id for label in labels]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"taxonomy {name!r}: duplicate label ids {duplicates}")
    extra = raw.get("extra") or {}
    if not isinstance(extra, dict):
        raise ValueError(f"taxonomy {name!r}: 'extra' must be a mapping")
    return Taxonomy(name, version, protocol, labels, MappingProxyType(extra))


def _parse_label(item: Any, where: str) -> LabelDef:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: each label must be a mapping")
    label_id = _required_str(item, "id", where)
    extra = item.get("extra") or {}
    if not isinstance(extra, dict):
        raise ValueError(f"{where}: 'extra' must be a mapping")
    return LabelDef(
        id=label_id,
        name=str(item.get("name") or label_id),
        definition=str(item.get("definition") or ""),
        synonyms=_phrases(item, "synonyms", where),
        exclusions=_phrases(item, "exclusions", where),
        nonspecific=_phrases(item, "nonspecific", where),
        extra=MappingProxyType(extra),
    )


def _phrases(item: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = item.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{where}: {key!r} must be a list of non-empty strings")
    return tuple(v.strip() for v in value)


def _required_str(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: missing or empty {key!r}")
    return value.strip()
