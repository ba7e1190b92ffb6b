"""bench/bench_release.py places the consensus service's own release marks on the chain's clock,
from its log lines (handlers.choose_release and publish_selection, ReleaseAhead.run_once): checked
on lines in the format those write, and against the format strings themselves."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from bench.bench_release import _AHEAD, _BUILT, _CHOSEN, _log_marks

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "consensus INFO services.consensus."
LINES = [
    "2026-12-01 00:27:00,100 consensus INFO services.consensus.gauges: an earlier line, before the chain",
    f"2026-12-01 00:27:04,839 {PREFIX}release_ahead: ahead of a release: 0 objects checked, agreement kept for"
    " ['cxr-label-verification'], in 1.789s (started 0.022s after the last decision noted; accepted studies read"
    " 0.254s, agreement computed 1.339s)",
    f"2026-12-01 00:27:09,811 {PREFIX}handlers: release r1: 706 accepted studies read in 0.218s (ahead); agreement"
    " report 0.420s (cached); composed 1.221s; 200 objects (0 checked ahead) checked and copied beside them, done"
    " 3.331s after (checked 1.757s, copied 2.788s)",
    f"2026-12-01 00:27:09,874 {PREFIX}handlers: release r1 chosen in 5.499s, then 0 more objects checked 0.000s,"
    " copied 0.000s, 7 files written 0.016s",
]


def _marks() -> dict[str, float]:
    since = time.mktime(time.strptime("2026-12-01 00:27:03", "%Y-%m-%d %H:%M:%S"))
    return {what: round(at, 3) for at, what in _log_marks(LINES, since)}


def test_each_step_lands_where_its_line_and_seconds_place_it() -> None:
    marks = _marks()
    assert marks["consensus: ahead round done (agreement kept)"] == 1.839
    assert marks["consensus: ahead round started (accepted studies, card agreement)"] == 0.05
    assert marks["consensus: last decision noted"] == 0.028
    # copies waited for (done 3.331 s after composing): they end as the line is written
    assert marks["consensus: release's copies done"] == 6.811
    assert marks["consensus: release's checks done, copies started"] == 4.023
    assert marks["consensus: release's checks started"] == 2.266
    assert marks["consensus: release's agreement report in hand"] == 6.811 - 3.331 - 1.221
    assert marks["consensus: release's files written (manifest last)"] == 6.874
    assert marks["consensus: release started (its event prepared)"] == pytest.approx(6.874 - 0.016 - 5.499)
    assert len(marks) == 12  # the earlier line (before the chain's start) adds nothing


def test_copies_done_before_the_card_is_an_upper_bound() -> None:
    line = LINES[2].replace("done 3.331s after", "done 0.000s after")
    since = time.mktime(time.strptime("2026-12-01 00:27:03", "%Y-%m-%d %H:%M:%S"))
    marks = {what: at for at, what in _log_marks([line], since)}
    assert "consensus: release's copies done (at the latest)" in marks


@pytest.mark.parametrize(("path", "pieces"), [
    ("services/consensus/release_ahead.py", ["ahead of a release:", "(started %.3fs after"
                                                     " the last decision noted"]),
    ("services/consensus/handlers.py", ["accepted studies read in %.3fs (%s); agreement report %.3fs (%s);"
                                                 " composed %.3fs;", "done %.3fs after (%s)"]),
    ("services/consensus/handlers.py", ["release %s chosen in %.3fs, then %s"]),
])
def test_the_services_still_write_what_the_bench_reads(path: str, pieces: list[str]) -> None:
    """A change to these log lines must change the bench's patterns (and LINES above) with them."""
    source = re.sub(r'"\s*\n\s*f?"', "", (ROOT / path).read_text())  # implicit concatenations joined
    for piece in pieces:
        assert piece in source, piece


def test_the_patterns_read_the_sample_lines() -> None:
    assert _AHEAD.search(LINES[1]) and _CHOSEN.search(LINES[2]) and _BUILT.search(LINES[3])
