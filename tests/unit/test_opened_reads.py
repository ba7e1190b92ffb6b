"""The gateway's memory of the reads it opened (services/gateway/opened_reads.py): a vote takes its
read once, only its own reader's, and the memory stays bounded, the least recently opened going first."""

from __future__ import annotations

from services.gateway.opened_reads import OpenedRead, OpenedReads, opened_reads


def _row(assignment_id: str, study_id: str = "S") -> dict:
    return {"assignment_id": assignment_id, "study_id": study_id, "suggested": [{"label_id": "x"}], "unmapped": [],
            "protocol": "cxr-label-verification", "report_text": "not kept"}


def test_a_read_is_taken_once_and_only_by_its_reader():
    reads = OpenedReads()
    reads.remember("r1", _row("A", "S-A"))
    assert reads.take("A", "r2") is None  # someone else's assignment is never judged from the memory
    assert reads.take("A", "r1") == OpenedRead("A", "r1", "S-A", [{"label_id": "x"}], [], "cxr-label-verification")
    assert reads.take("A", "r1") is None and len(reads) == 0


def test_the_memory_is_bounded_and_lets_the_least_recently_opened_go_first():
    reads = OpenedReads(limit=3)
    for name in ("A", "B", "C"):
        reads.remember("r1", _row(name))
    reads.remember("r1", _row("A"))  # opened again (GET /next twice): now the most recent
    reads.remember("r1", _row("D"))
    assert len(reads) == 3
    assert reads.take("B", "r1") is None
    assert [reads.take(n, "r1") is not None for n in ("A", "C", "D")] == [True, True, True]


def test_each_app_has_its_own_memory():
    first, second = {}, {}
    opened_reads(first).remember("r1", _row("A"))
    assert opened_reads(first) is opened_reads(first) and len(opened_reads(first)) == 1
    assert len(opened_reads(second)) == 0
