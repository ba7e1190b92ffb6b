"""The curator's funnel (`GET /api/v1/progress`, services/gateway/repo/progress.py `funnel`) is read
in one pass over the protocol's studies (with their suggestion and decision) instead of joining each
table to studies: the counts must stay those of the joined counts (`REFERENCE`, the query it
replaced) in every state, on the gateway's real tables: two protocols, a suggestion and a decision
whose study is not (yet) in, expired reads, several votes per study, nothing at all."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

from services.gateway.repo import progress

pytestmark = pytest.mark.integration

# Each table joined to studies on its own: what the funnel counted before the one-pass read.
REFERENCE = (
    "SELECT (SELECT count(*) FROM studies WHERE protocol = %(p)s) AS ingested,"
    " (SELECT count(*) FROM suggestions g JOIN studies s USING (study_id) WHERE s.protocol = %(p)s) AS suggested,"
    " (SELECT count(DISTINCT study_id) FROM assignments WHERE protocol = %(p)s) AS sampled,"
    " (SELECT count(*) FROM assignments WHERE status <> 'expired' AND protocol = %(p)s) AS assignments,"
    " (SELECT count(*) FROM votes v JOIN studies s USING (study_id) WHERE s.protocol = %(p)s) AS votes,"
    " (SELECT count(*) FROM decisions d JOIN studies s USING (study_id) WHERE s.protocol = %(p)s) AS decided,"
    " (SELECT count(*) FROM decisions d JOIN studies s USING (study_id) WHERE d.accepted AND s.protocol = %(p)s)"
    " AS accepted")
PROTOCOLS = ("cxr-label-verification", "lumbar-mri", "none-such")


def _study(conn: psycopg.Connection, study_id: str, protocol: str) -> None:
    conn.execute("INSERT INTO studies (study_id, patient_id, protocol, study_instance_uid, report_text, correlation_id)"
                 " VALUES (%s, %s, %s, %s, 'report', 'c')", (study_id, f"P-{study_id}", protocol, f"1.2.{study_id}"))


def _suggestion(conn: psycopg.Connection, study_id: str) -> None:
    conn.execute("INSERT INTO suggestions (study_id, taxonomy_version, labels, unmapped, extraction, mapping)"
                 " VALUES (%s, 'v1', '[]', '[]', '{}', '{}')", (study_id,))


def _reads(conn: psycopg.Connection, study_id: str, protocol: str, voted: int, expired: int, open_: int) -> None:
    statuses = ["voted"] * voted + ["expired"] * expired + ["open"] * open_
    for n, status in enumerate(statuses):
        assignment_id = f"A-{study_id}-{n}"
        conn.execute("INSERT INTO assignments (assignment_id, study_id, reader_id, run_id, difficulty, suggested,"
                     " unmapped, reason, protocol, status) VALUES (%s, %s, %s, 'run', 'easy', '[]', '[]', 's', %s, %s)",
                     (assignment_id, study_id, f"r{n}", protocol, status))
        if status == "voted":
            conn.execute("INSERT INTO votes (vote_id, assignment_id, study_id, reader_id, judgement, added_labels,"
                         " removed_labels) VALUES (%s, %s, %s, %s, '{}', '[]', '[]')",
                         (f"V-{assignment_id}", assignment_id, study_id, f"r{n}"))


def _decision(conn: psycopg.Connection, study_id: str, accepted: bool) -> None:
    conn.execute("INSERT INTO decisions (study_id, accepted, labels, rule, vote_ids) VALUES (%s, %s, '[]', 'majority',"
                 " '[]')", (study_id, accepted))


async def _assert_same(dsn: str) -> list[dict]:
    seen = []
    async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as conn:
        for protocol in PROTOCOLS:
            got = await progress.funnel(conn, protocol)
            cur = await conn.execute(REFERENCE, {"p": protocol})
            assert got == await cur.fetchone(), protocol
            assert list(got) == ["ingested", "suggested", "sampled", "assignments", "votes", "decided", "accepted"]
            seen.append(got)
    return seen


async def test_the_funnel_counts_what_joining_each_table_to_studies_counts(gateway_dsn):
    empty = await _assert_same(gateway_dsn)
    assert all(set(f.values()) == {0} for f in empty)

    cxr, lumbar = PROTOCOLS[:2]
    with psycopg.connect(gateway_dsn) as conn:
        for n in range(1, 7):
            _study(conn, f"C{n}", cxr)
        for n in range(1, 4):
            _study(conn, f"L{n}", lumbar)
        for study_id in ("C1", "C2", "C3", "C4", "L1", "GHOST"):  # GHOST: its study not in yet
            _suggestion(conn, study_id)
        _reads(conn, "C1", cxr, voted=3, expired=1, open_=0)
        _reads(conn, "C2", cxr, voted=1, expired=0, open_=2)
        _reads(conn, "C3", cxr, voted=0, expired=2, open_=1)
        _reads(conn, "L1", lumbar, voted=2, expired=0, open_=1)
        _decision(conn, "C1", True)
        _decision(conn, "C2", False)
        _decision(conn, "L1", True)
        _decision(conn, "GHOST", True)
    cxr_funnel, lumbar_funnel, none = await _assert_same(gateway_dsn)
    assert cxr_funnel == {"ingested": 6, "suggested": 4, "sampled": 3, "assignments": 7, "votes": 4, "decided": 2,
                          "accepted": 1}
    assert lumbar_funnel == {"ingested": 3, "suggested": 1, "sampled": 1, "assignments": 3, "votes": 2, "decided": 1,
                             "accepted": 1}
    assert set(none.values()) == {0}
