"""Long regex alternations grouped by first character, with the same matches as the plain ones.

Python's regex engine tries an alternation's branches one after another at every position it
reaches: a taxonomy label's 20 phrases or the extractor's 55 trigger phrases are each tried at
every word start of every report, although at a word starting with "e" only the few branches that
can start with "e" could match. `grouped` rewrites `A|B|C|...` as

    (?=[e])(?:B|...)|(?=[n])(?:A|C|...)|...

one group per possible first character, each holding, in their original order, the branches that
can start with it. At a given position at most one group's guard holds, and within it the first
branch that matches is the first that matched before (the others could not match there), so every
match, span and group is the same as the plain alternation's; only the failing tries are skipped.

The first characters come from Python's own regex parser. Where a branch's first character cannot
be told (a class like `\\w`, a negated set, a branch that can match empty) or is not ASCII (case
folding outside ASCII is not a one-to-one lower-casing), `grouped` returns None and the caller
keeps the plain alternation: grouping is an optimisation that must never change a result.
"""

from __future__ import annotations

import re
import re._constants as sre_c  # the stdlib's own regex parser (private, stable since 3.11)
import re._parser as sre_p
from typing import Any

_TRANSPARENT = {sre_c.AT, sre_c.ASSERT, sre_c.ASSERT_NOT}  # zero-width: look past them (a superset)
_MAX_RANGE = 128  # a range wider than this is not worth spelling out: give up


def grouped(branches: list[str], flags: int = 0) -> str | None:
    """`branches` (regex sources, in priority order) as one first-character-grouped alternation,
    or None when a branch's possible first characters cannot be told (see the module docstring).

    Branches are parsed alone, so each must be a complete regex (named groups are fine as long as
    a name occurs once per branch; the caller makes names unique across groups).
    """
    by_char: dict[str, list[int]] = {}
    for index, source in enumerate(branches):
        first = first_chars(source, flags)
        if first is None:
            return None
        for char in first:
            by_char.setdefault(char, []).append(index)
    parts = []
    for char in sorted(by_char):
        alternatives = "|".join(branches[i] for i in by_char[char])
        parts.append(f"(?={re.escape(char)})(?:{alternatives})")
    return "|".join(parts) if parts else None


def first_chars(source: str, flags: int = 0) -> frozenset[str] | None:
    """The characters a match of `source` can start with (lower-cased under IGNORECASE), a superset;
    None when unknown, not ASCII, or when `source` can match the empty string."""
    try:
        parsed = sre_p.parse(source, flags)
    except re.error:
        return None
    ignore_case = bool((flags | parsed.state.flags) & re.IGNORECASE)
    found = _first_of_sequence(list(parsed))
    if found is None:
        return None
    chars, nullable = found
    if nullable or any(not c.isascii() for c in chars):
        return None
    return frozenset(c.lower() for c in chars) if ignore_case else frozenset(chars)


def _first_of_sequence(items: list[tuple[Any, Any]]) -> tuple[set[str], bool] | None:
    """First characters of a sequence of parsed items, and whether the whole can match empty."""
    chars: set[str] = set()
    for op, av in items:
        if op in _TRANSPARENT:
            continue
        found = _first_of_item(op, av)
        if found is None:
            return None
        item_chars, nullable = found
        chars |= item_chars
        if not nullable:
            return chars, False
    return chars, True


def _first_of_item(op: Any, av: Any) -> tuple[set[str], bool] | None:
    if op is sre_c.LITERAL:
        return {chr(av)}, False
    if op is sre_c.IN:
        in_set = _set_chars(av)
        return None if in_set is None else (in_set, False)
    if op is sre_c.SUBPATTERN:
        _group, add_flags, del_flags, pattern = av
        if add_flags or del_flags:
            return None  # a scoped flag (e.g. case) changes what the characters mean
        return _first_of_sequence(list(pattern))
    if op is sre_c.BRANCH:
        chars: set[str] = set()
        nullable = False
        for branch in av[1]:
            found = _first_of_sequence(list(branch))
            if found is None:
                return None
            chars |= found[0]
            nullable = nullable or found[1]
        return chars, nullable
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
        low, _high, pattern = av
        found = _first_of_sequence(list(pattern))
        if found is None:
            return None
        return found[0], found[1] or low == 0
    if op is sre_c.ATOMIC_GROUP:
        return _first_of_sequence(list(av))
    return None  # ANY, NOT_LITERAL, CATEGORY, GROUPREF, ...: unknown


def _set_chars(items: list[tuple[Any, Any]]) -> set[str] | None:
    chars: set[str] = set()
    for op, av in items:
        if op is sre_c.LITERAL:
            chars.add(chr(av))
        elif op is sre_c.RANGE and av[1] - av[0] < _MAX_RANGE:
            chars.update(chr(c) for c in range(av[0], av[1] + 1))
        else:
            return None  # NEGATE, CATEGORY (\w, \d), a wide range
    return chars
