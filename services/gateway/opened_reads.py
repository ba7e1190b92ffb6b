"""The reads this gateway process has just opened for a reader, remembered until the reader votes.

A vote needs what its assignment says about the study (its study, suggestion, unmapped findings
and protocol) to judge the vote before it is written: read from Postgres under a row lock, that
is a round trip of its own before the vote's statement (BEGIN and the locking read; then the
write and COMMIT). But the gateway has just sent exactly that row to the reader: `GET /next`, or
the previous vote's `next_assignment`, opened it. Those columns never change once an assignment
exists (a re-offer expires the read and makes a new one), so the vote on a read remembered here
is judged from the memory and written in ONE statement, guarded so that it writes only while
the read is still this reader's and still open (`repo.reviews.record_vote_on_open_read`). When
the guard finds it otherwise (voted from another page, expired by a re-offer) or the judgement
refuses the vote, the vote goes the locking way, which answers exactly as it always has.

The memory is per process and bounded (the least recently opened go first); a read not in it
(another gateway process opened it, or it was let go) simply takes the locking way.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

# Reads remembered at most: a few per active reader (each `next` remembers the read it opened).
MAX_OPENED_READS = 8192


@dataclass(frozen=True, slots=True)
class OpenedRead:
    """What a vote's judgement reads from its assignment, as the gateway opened it for `reader_id`."""

    assignment_id: str
    reader_id: str
    study_id: str
    suggested: Any
    unmapped: Any
    protocol: str


class OpenedReads:
    """assignment_id -> OpenedRead, the most recently opened last; at most `limit` of them."""

    def __init__(self, limit: int = MAX_OPENED_READS) -> None:
        self._reads: OrderedDict[str, OpenedRead] = OrderedDict()
        self._limit = limit

    def __len__(self) -> int:
        return len(self._reads)

    def remember(self, reader_id: str, row: dict[str, Any]) -> None:
        """Remember a read just opened for `reader_id` (a row with assignment_id, study_id,
        suggested, unmapped and protocol, as `GET /next` selects it)."""
        read = OpenedRead(row["assignment_id"], reader_id, row["study_id"], row["suggested"], row["unmapped"],
                          row["protocol"])
        self._reads[read.assignment_id] = read
        self._reads.move_to_end(read.assignment_id)
        while len(self._reads) > self._limit:
            self._reads.popitem(last=False)

    def take(self, assignment_id: str, reader_id: str) -> OpenedRead | None:
        """The read, forgotten now (a vote is cast on a read once), if this process opened it for
        `reader_id`; None otherwise (someone else's assignment is never judged from the memory)."""
        read = self._reads.get(assignment_id)
        if read is None or read.reader_id != reader_id:
            return None
        del self._reads[assignment_id]
        return read


def opened_reads(extra: dict[str, Any]) -> OpenedReads:
    """The process's memory of opened reads, kept in its Resources' `extra` (one per app, so two
    apps on two databases in one process never share it)."""
    reads = extra.get("opened_reads")
    if reads is None:
        reads = extra["opened_reads"] = OpenedReads()
    return reads
