"""Long regex alternations grouped by their first characters, with the same matches as the plain ones.

Python's regex engine tries an alternation's branches one after another at every position it
reaches: a taxonomy label's 20 phrases or the extractor's 55 trigger phrases are each tried at
every word start of every report, although at the word "effusion" only the few branches that can
start with "eff" could match. `grouped` rewrites `A|B|C|...` as a two-level tree of look-aheads,

    (?=e)(?:(?=eva)(?:B|...)|(?=eff)(?:...)|...)|(?=n)(?:(?=not)(?:A|C|...)|(?=no)(?:C|...)|...)|...

first by a branch's possible first character, then by its possible first few characters (its
"keys": every match of the branch starts with one of them), the longer keys first. Each group
holds, in their original order, the branches with a key that starts the group's key. At a given
position exactly one first-character guard can hold, and the first key guard that holds is the
longest key the text there starts with; every branch that can match there has a key that starts
the text, hence starts that key, and so is in that group, in its original place. So the first
branch that matches is the same as before (the others could not match there), and every match,
span and named group is the plain alternation's; only failing tries are skipped.

The keys come from Python's own regex parser. Where a branch's first character cannot be told (a
class like `\\w`, a negated set, a branch that can match empty) or is not ASCII (case folding
outside ASCII is not one lower-casing), `grouped` returns None and the caller keeps the plain
alternation: grouping is an optimisation that must never change a result.
"""

from __future__ import annotations

import re
import re._constants as sre_c  # the stdlib's own regex parser (private, stable since 3.11)
import re._parser as sre_p
from typing import Any

_TRANSPARENT = {sre_c.AT, sre_c.ASSERT, sre_c.ASSERT_NOT}  # zero-width: look past them (a superset)
_MAX_RANGE = 128  # a range wider than this is not worth spelling out: give up
KEY_LENGTH = 3  # how many first characters a group key spells out
_MAX_KEYS = 64  # more keys than this for one branch: fall back to shorter keys

# A partial key: the characters so far, and whether the match may go on past them (False: the
# branch's match is known to start with them and nothing more is known, or the key is full).
_Partial = tuple[str, bool]


def grouped(branches: list[str], flags: int = 0, key_length: int = KEY_LENGTH) -> str | None:
    """`branches` (regex sources, in priority order) as one alternation grouped by their first
    characters, or None when a branch's first character cannot be told (see the module docstring).

    Branches are parsed alone, so each must be a complete regex; a named group that occurs in
    several groups must be renamed by the caller (Python allows a name once per pattern).
    """
    keys_of: list[frozenset[str]] = []
    for source in branches:
        found = keys(source, flags, key_length)
        if found is None:
            return None
        keys_of.append(found)
    every_key = {key for found in keys_of for key in found}
    parts = []
    for char in sorted({key[0] for key in every_key}):
        inner = []
        # longest first: the first guard that holds is the longest key the text starts with
        for key in sorted((k for k in every_key if k[0] == char), key=lambda k: (-len(k), k)):
            members = [branches[i] for i, found in enumerate(keys_of) if any(key.startswith(k) for k in found)]
            guard = f"(?={re.escape(key)})" if len(key) > 1 else ""  # one character: checked above
            inner.append(f"{guard}(?:{'|'.join(members)})")
        parts.append(f"(?={re.escape(char)})(?:{'|'.join(inner)})")
    return "|".join(parts) if parts else None


def keys(source: str, flags: int = 0, key_length: int = KEY_LENGTH) -> frozenset[str] | None:
    """Strings of 1 to `key_length` characters such that every match of `source` starts with one
    of them (lower-cased under IGNORECASE): its possible beginnings, as far as they can be told.
    None when even the first character cannot be told, is not ASCII, or the match can be empty."""
    try:
        parsed = sre_p.parse(source, flags)
    except re.error:
        return None
    ignore_case = bool((flags | parsed.state.flags) & re.IGNORECASE)
    for length in range(key_length, 0, -1):
        partials = _sequence(list(parsed), length)
        if partials is not None and len(partials) <= _MAX_KEYS:
            break
    else:
        return None
    found = {text for text, _ in partials}
    if "" in found or any(not text.isascii() for text in found):
        return None
    return frozenset(text.lower() for text in found) if ignore_case else frozenset(found)


def first_chars(source: str, flags: int = 0) -> frozenset[str] | None:
    """The characters a match of `source` can start with (see `keys`), a superset, or None."""
    return keys(source, flags, 1)


def _sequence(items: list[tuple[Any, Any]], room: int) -> set[_Partial] | None:
    """The partial keys of a sequence of parsed items, at most `room` characters long; None when
    not even one is known (more than _MAX_KEYS counts as unknown)."""
    partials: set[_Partial] = {("", True)}
    for op, av in items:
        grown: set[_Partial] = set()
        for text, open_ in partials:
            if not open_ or len(text) >= room:
                grown.add((text, False))
                continue
            found = _item(op, av, room - len(text))
            if found is None:
                grown.add((text, False))  # what comes next is unknown: the key stops here
            else:
                grown.update((text + more, more_open) for more, more_open in found)
        partials = grown
        if len(partials) > _MAX_KEYS:
            return None
    return partials


def _item(op: Any, av: Any, room: int) -> set[_Partial] | None:
    if op in _TRANSPARENT:
        return {("", True)}  # zero-width: the key goes on past it (a superset of its matches)
    if op is sre_c.LITERAL:
        return {(chr(av), True)}
    if op is sre_c.IN:
        chars = _set_chars(av)
        return None if chars is None else {(c, True) for c in chars}
    if op is sre_c.SUBPATTERN:
        _group, add_flags, del_flags, pattern = av
        if add_flags or del_flags:
            return None  # a scoped flag (e.g. case) changes what the characters mean
        return _sequence(list(pattern), room)
    if op is sre_c.BRANCH:
        union: set[_Partial] = set()
        for branch in av[1]:
            found = _sequence(list(branch), room)
            if found is None:
                return None
            union |= found
        return union
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
        low, high, pattern = av
        once = _sequence(list(pattern), room)
        if once is None:
            return None
        if high != 1:  # a second round could follow: the key stops after the first
            once = {(text, False) for text, _ in once}
        return once | {("", True)} if low == 0 else once
    if op is sre_c.ATOMIC_GROUP:
        return _sequence(list(av), room)
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


FILTER_KEY_LENGTH = 8  # keys for `LoweredText.lacks`: longer ones tell more phrases apart


class LoweredText:
    """A text lower-cased once, for telling at once that a pattern cannot match anywhere in it:
    every match starts with one of the pattern's keys (`keys`), so a text holding none of them
    has no match. Only for ASCII text, where the regex engine's case folding is `str.lower`; for
    other text `lacks` never says a key is missing and the pattern runs as before.
    """

    __slots__ = ("lowered",)

    def __init__(self, text: str) -> None:
        self.lowered = text.lower() if text.isascii() else None

    @staticmethod
    def filter_keys(found_keys: frozenset[str] | None) -> tuple[str, ...] | None:
        """`found_keys` cut to what `lacks` needs: each to its first word (a text holding a key
        holds its beginning), and a key dropped where a beginning of it is a key too (a text
        holding it holds that one); fewer, shorter substrings to look for, the same verdict."""
        if found_keys is None:
            return None
        cut = {re.match(r"[a-z0-9]*", key).group(0) or key for key in found_keys}  # type: ignore[union-attr]
        return tuple(sorted(k for k in cut if not any(k != other and k.startswith(other) for other in cut)))

    def lacks(self, found_keys: tuple[str, ...] | None) -> bool:
        """True when none of `found_keys` (lower-cased, from `filter_keys`) occurs in the text."""
        if self.lowered is None or found_keys is None:
            return False
        # map over the bound method, not a generator: no Python frame per key (~0.1 ms per report)
        return not any(map(self.lowered.__contains__, found_keys))

    def first(self, found_keys: tuple[str, ...] | None) -> int:
        """Where the earliest of `found_keys` (from `filter_keys`) occurs in the text: no match of
        their pattern starts before it, so a scan may start there (`pattern.finditer(text, pos)`
        still sees the characters before `pos` for look-behinds and `\\b`). -1 when none occurs (as
        `lacks`); 0 when it cannot be told (text not ASCII, keys unknown)."""
        if self.lowered is None or found_keys is None:
            return 0
        lowered, first = self.lowered, -1
        for key in found_keys:
            # after a hit, a key can only be earlier if it ends before that hit's end: look no further
            at = lowered.find(key) if first < 0 else lowered.find(key, 0, first + len(key) - 1)
            if at >= 0:
                first = at
        return first
