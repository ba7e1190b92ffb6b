"""Reader assignment: K distinct radiologists per sampled study, with the work shared evenly.

Pure logic. Balance matters because a reader who gets twice the studies of a colleague both
slows the whole panel down and weighs twice as much in the benchmark's ground truth.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping, Sequence


def assign_readers(
    study_ids: Sequence[str],
    panel: Sequence[str],
    k: int,
    *,
    seed: int,
    capacity: Mapping[str, int] | None = None,
    exclusions: Mapping[str, set[str]] | None = None,
    existing_load: Mapping[str, int] | None = None,
) -> dict[str, list[str]]:
    """Give every study `k` distinct readers (sorted ids), the least-loaded eligible ones first.

    `capacity[r]` caps reader r's total load, `existing_load` included; `exclusions[r]` are
    study ids r must not read (own patients, own institution). Studies with the fewest
    eligible readers are placed first so that excluded readers catch up on the others, which
    keeps loads within one of each other among readers whose capacity does not bind.
    Raises ValueError when no assignment exists (or, in rare tight cases, the greedy pass
    cannot find one): k larger than a study's eligible panel, or too little total capacity.
    """
    readers = sorted(_unique(panel, "reader"))  # panel order must not change the outcome
    studies = _unique(study_ids, "study")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    excluded = _excluded_by_study(exclusions or {}, set(readers))
    load = {r: (existing_load or {}).get(r, 0) for r in readers}
    room = {r: _room(r, capacity or {}, load) for r in readers}
    eligible = {s: [r for r in readers if r not in excluded.get(s, ())] for s in studies}
    _check_feasible(eligible, room, k)

    rng = random.Random(seed)
    tiebreak = {s: rng.random() for s in sorted(studies)}
    assigned: dict[str, list[str]] = {}
    for s in sorted(studies, key=lambda s: (len(eligible[s]), tiebreak[s], s)):
        assigned[s] = _pick(s, eligible[s], k, load, room, rng)
    return {s: assigned[s] for s in studies}


def reoffer(
    study_id: str,
    current_readers: Sequence[str],
    expired_reader: str,
    panel: Sequence[str],
    load: Mapping[str, int],
    exclusions: Mapping[str, set[str]] | None = None,
) -> str | None:
    """The reader to take over an expired assignment: least loaded, ties by reader id.

    Pass in `current_readers` everyone who has or ever had the study (earlier expiries too): a
    reader who has seen the suggested labels or other votes would no longer read it blind.
    None when nobody is left.
    """
    barred = set(current_readers) | {expired_reader}
    barred |= {r for r, studies in (exclusions or {}).items() if study_id in studies}
    candidates = [r for r in panel if r not in barred]
    return min(candidates, key=lambda r: (load.get(r, 0), r), default=None)


def _unique(ids: Sequence[str], what: str) -> list[str]:
    seen: set[str] = set()
    for x in ids:
        if x in seen:
            raise ValueError(f"{what} {x!r} listed twice")
        seen.add(x)
    return list(ids)


def _excluded_by_study(exclusions: Mapping[str, set[str]], readers: set[str]) -> dict[str, set[str]]:
    by_study: dict[str, set[str]] = {}
    for reader, studies in exclusions.items():
        if reader in readers:
            for s in studies:
                by_study.setdefault(s, set()).add(reader)
    return by_study


def _room(reader: str, capacity: Mapping[str, int], load: Mapping[str, int]) -> float:
    if reader not in capacity:
        return math.inf
    return max(capacity[reader] - load[reader], 0)


def _check_feasible(eligible: Mapping[str, list[str]], room: Mapping[str, float], k: int) -> None:
    """The two ways an assignment is plainly impossible, reported before any work is done."""
    for s, readers in eligible.items():
        if len(readers) < k:
            raise ValueError(f"study {s!r} needs {k} readers but only {len(readers)} are eligible")
    needed = k * len(eligible)
    total = sum(room.values())
    if total < needed:
        raise ValueError(f"panel capacity {total} is too small for {len(eligible)} studies x {k} readers")


def _pick(
    study: str, eligible: list[str], k: int, load: dict[str, int], room: dict[str, float],
    rng: random.Random,
) -> list[str]:
    """The k least-loaded eligible readers with room left, random among equals; updates load."""
    open_readers = [r for r in eligible if room[r] > 0]
    if len(open_readers) < k:
        raise ValueError(
            f"study {study!r}: only {len(open_readers)} eligible readers have capacity left, need {k}"
        )
    keyed = [(load[r], rng.random(), r) for r in open_readers]
    chosen = [r for _, _, r in heapq.nsmallest(k, keyed)]
    for r in chosen:
        load[r] += 1
        room[r] -= 1
    return sorted(chosen)
