"""The consensus service's tables."""

from __future__ import annotations

import json

import psycopg

from services.common.contracts import AdjudicationRequested, DicomObject, ReviewAssigned, VoteCast, legacy_judgement
from services.common.protocols.kit.decision import Decision

# A vote row's judgement: the stored one, or (rows from before judgements) the flat columns read
# the way schema-1 vote events are upcast. `protocol` comes from the study's assignment. The flat
# columns are sent only where there is no judgement: a vote with one has them too ('[]' by
# default), and decoding those two jsonb values per vote was two thirds of the JSON a report's or
# a release's read decodes, for values `_with_judgement` drops.
_JUDGEMENT_COLUMNS = ", ".join(
    ["v.judgement"] + [f"CASE WHEN v.judgement IS NULL THEN v.{c} END AS {c}"
                       for c in ("verdict", "added_labels", "removed_labels", "grades")] + ["a.protocol"])


def _with_judgement(row: dict) -> dict:
    """The row with its judgement's fields in place of the storage columns (`protocol` dropped)."""
    flat = {k: row.pop(k) for k in ("verdict", "added_labels", "removed_labels", "grades")}
    protocol = row.pop("protocol")
    judgement = row.pop("judgement") or legacy_judgement(protocol, flat)
    return {**row, **{k: v for k, v in judgement.items() if k != "protocol"}}


# A study's counted votes in casting order (`counted_votes`).
_COUNTED_VOTES = (f"SELECT v.vote_id, v.reader_id, {_JUDGEMENT_COLUMNS}"
                  " FROM votes v JOIN assignments a USING (study_id)"
                  " WHERE v.study_id = %s AND v.counted ORDER BY v.cast_at, v.vote_id")


async def save_assignment(conn: psycopg.AsyncConnection, a: ReviewAssigned, objects: list[DicomObject]) -> None:
    """The study's readers and suggestion, with its instance list (as the event's manifest gives it)."""
    await conn.execute(
        "INSERT INTO assignments (study_id, patient_id, protocol, run_id, readers, suggested, difficulty,"
        " taxonomy_version, extraction, mapping, objects) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
        " ON CONFLICT (study_id) DO NOTHING",
        (a.study_id, a.patient_id, a.protocol, a.run_id, json.dumps(a.readers),
         json.dumps([s.label_id for s in a.suggested]), a.difficulty, a.taxonomy_version,
         a.extraction.model_dump_json(), a.mapping.model_dump_json(),
         json.dumps([o.model_dump(mode="json") for o in objects])),
    )


async def get_assignment(conn: psycopg.AsyncConnection, study_id: str) -> dict | None:
    cur = await conn.execute("SELECT * FROM assignments WHERE study_id = %s", (study_id,))
    return await cur.fetchone()


# A vote recorded in one statement, with what was known before it (the CTE `seen`, whose snapshot
# does not include the insert): whether the study is assigned yet, how many readers it has, whether
# the voter is one of them or a former one, whether it is decided, whether the voter already has a
# counted vote on it, and how many counted votes its current readers have. (Answers, not the
# reader lists: nothing to decode per vote.) The vote is counted unless the study is
# decided or this is a re-vote; a vote by someone who is not (and was not) a reader is not inserted.
_RECORD_VOTE = (
    "WITH seen AS (SELECT a.study_id IS NOT NULL AS assigned, jsonb_array_length(a.readers) AS n_readers,"
    " coalesce(a.readers ? %(reader)s, false) AS reader,"
    " coalesce(a.former_readers ? %(reader)s, false) AS former_reader,"
    " EXISTS (SELECT 1 FROM decisions WHERE study_id = %(study)s) AS decided,"
    " EXISTS (SELECT 1 FROM votes WHERE study_id = %(study)s AND reader_id = %(reader)s AND counted) AS revote,"
    " (SELECT count(*) FROM votes v WHERE v.study_id = %(study)s AND v.counted AND a.readers ? v.reader_id)"
    " AS counted_by_readers"
    " FROM (VALUES (1)) AS one LEFT JOIN assignments a ON a.study_id = %(study)s),"
    " saved AS (INSERT INTO votes (vote_id, study_id, reader_id, judgement, seconds_spent, cast_at, counted)"
    " SELECT %(vote)s::text, %(study)s::text, %(reader)s::text, %(judgement)s::jsonb, %(seconds)s::float8,"
    " %(cast_at)s::timestamptz, NOT (decided OR revote)"
    " FROM seen WHERE NOT assigned OR reader OR former_reader"
    " ON CONFLICT (vote_id) DO NOTHING)"
    " SELECT * FROM seen")


async def record_vote(conn: psycopg.AsyncConnection, v: VoteCast) -> dict:
    """Record the vote (counted unless its study is decided or its reader has a counted vote there;
    not at all if the study is assigned and its reader is neither a reader nor a former one) and
    return what was known before it: assigned, n_readers, reader, former_reader, decided, revote,
    counted_by_readers. One statement where a vote used to make three reads and an insert."""
    cur = await conn.execute(_RECORD_VOTE, {
        "study": v.study_id, "reader": v.reader_id, "vote": v.vote_id, "judgement": v.judgement.model_dump_json(),
        "seconds": v.seconds_spent, "cast_at": v.occurred_at})
    row = await cur.fetchone()
    assert row is not None  # the outer side of the join always gives one row
    return row


# `_RECORD_VOTE` for several votes in one statement. Each vote's `seen` row is what was known
# before the statement, so the votes of one statement must be on different studies (then no vote
# of it can see another's insert, exactly as if they had come one after another): `record_votes`'
# caller splits a batch into such rounds. The arrays travel in binary (%b): psycopg writes a
# text-format array element by element in Python, escaping every quote of each judgement's JSON and
# formatting each timestamp; bench/bench_consensus_votes.py, three pairs at load 10-17: the batched
# vote path 0.083-0.110 ms of consensus CPU per vote with text arrays, 0.047-0.067 in binary.
_RECORD_VOTES = (
    "WITH batch AS (SELECT * FROM unnest(%(vote)b::text[], %(study)b::text[], %(reader)b::text[],"
    " %(judgement)b::text[], %(seconds)b::float8[], %(cast_at)b::timestamptz[]) WITH ORDINALITY"
    " AS b(vote_id, study_id, reader_id, judgement, seconds_spent, cast_at, n)),"
    " seen AS (SELECT b.*, a.study_id IS NOT NULL AS assigned, jsonb_array_length(a.readers) AS n_readers,"
    " coalesce(a.readers ? b.reader_id, false) AS reader,"
    " coalesce(a.former_readers ? b.reader_id, false) AS former_reader,"
    " EXISTS (SELECT 1 FROM decisions d WHERE d.study_id = b.study_id) AS decided,"
    " EXISTS (SELECT 1 FROM votes v WHERE v.study_id = b.study_id AND v.reader_id = b.reader_id AND v.counted)"
    " AS revote,"
    " (SELECT count(*) FROM votes v WHERE v.study_id = b.study_id AND v.counted AND a.readers ? v.reader_id)"
    " AS counted_by_readers"
    " FROM batch b LEFT JOIN assignments a ON a.study_id = b.study_id),"
    " saved AS (INSERT INTO votes (vote_id, study_id, reader_id, judgement, seconds_spent, cast_at, counted)"
    " SELECT vote_id, study_id, reader_id, judgement::jsonb, seconds_spent, cast_at, NOT (decided OR revote)"
    " FROM seen WHERE NOT assigned OR reader OR former_reader ORDER BY n"
    " ON CONFLICT (vote_id) DO NOTHING)"
    " SELECT assigned, n_readers, reader, former_reader, decided, revote, counted_by_readers FROM seen ORDER BY n")


async def record_votes(conn: psycopg.AsyncConnection, votes: list[VoteCast]) -> list[dict]:
    """`record_vote` for several votes, each on a different study, in one statement: what was
    known before each, in the order given."""
    if len({v.study_id for v in votes}) != len(votes):
        raise ValueError("record_votes: the votes of one statement must be on different studies")
    cur = await conn.execute(_RECORD_VOTES, {
        "vote": [v.vote_id for v in votes], "study": [v.study_id for v in votes],
        "reader": [v.reader_id for v in votes], "judgement": [v.judgement.model_dump_json() for v in votes],
        # float(): a binary float8[] takes floats only (a whole number of seconds may come as an int)
        "seconds": [None if v.seconds_spent is None else float(v.seconds_spent) for v in votes],
        "cast_at": [v.occurred_at for v in votes]})
    return await cur.fetchall()


async def decision_inputs_many(conn: psycopg.AsyncConnection, study_ids: list[str],
                               ) -> dict[str, tuple[dict | None, bool, list[dict]]]:
    """`decision_inputs` for several studies in one round trip: study id -> (assignment or None,
    decided, counted votes in casting order). The ids travel in binary, as `record_votes`' arrays
    (a text-format list is dumped element by element in Python: 50 ids ~205 against ~22 us)."""
    assignments = await conn.execute(
        "SELECT a.*, EXISTS (SELECT 1 FROM decisions d WHERE d.study_id = a.study_id) AS decided"
        " FROM assignments a WHERE a.study_id = ANY(%b::text[])", (study_ids,))
    votes = await conn.execute(
        f"SELECT v.study_id, v.vote_id, v.reader_id, {_JUDGEMENT_COLUMNS}"
        " FROM votes v JOIN assignments a USING (study_id)"
        " WHERE v.study_id = ANY(%b::text[]) AND v.counted ORDER BY v.study_id, v.cast_at, v.vote_id", (study_ids,))
    found: dict[str, tuple[dict | None, bool, list[dict]]] = {s: (None, False, []) for s in study_ids}
    for row in await assignments.fetchall():
        decided = row.pop("decided")
        found[row["study_id"]] = (row, decided, [])
    for row in await votes.fetchall():
        study_id = row.pop("study_id")
        found[study_id][2].append(_with_judgement(row))
    return found


async def decision_inputs(conn: psycopg.AsyncConnection, study_id: str) -> tuple[dict | None, bool, list[dict]]:
    """The study's assignment, whether it is decided and its counted votes (`counted_votes`), in one
    round trip: both statements are sent before either answer is read (in pipeline mode, as the
    consumer's batches run, they travel together; outside it they run one after another)."""
    assignment = await conn.execute(
        "SELECT a.*, EXISTS (SELECT 1 FROM decisions d WHERE d.study_id = a.study_id) AS decided"
        " FROM assignments a WHERE a.study_id = %s", (study_id,))
    votes = await conn.execute(_COUNTED_VOTES, (study_id,))
    row = await assignment.fetchone()
    decided = row.pop("decided") if row is not None else False
    return row, decided, [_with_judgement(r) for r in await votes.fetchall()]


async def counted_votes(conn: psycopg.AsyncConnection, study_id: str) -> list[dict]:
    """A study's counted votes in casting order: vote_id, reader_id and the judgement's fields."""
    cur = await conn.execute(_COUNTED_VOTES, (study_id,))
    return [_with_judgement(r) for r in await cur.fetchall()]


async def flag(conn: psycopg.AsyncConnection, study_id: str, reason: str) -> None:
    await conn.execute("INSERT INTO flags (study_id, reason) VALUES (%s, %s)", (study_id, reason))


async def save_decision(conn: psycopg.AsyncConnection, study_id: str, d: Decision, vote_ids: list[str],
                        cells: list[dict] | None = None) -> None:
    """`cells`: per-cell decisions (CellConsensus dicts) of a grid protocol; None for the others."""
    await save_decisions(conn, [(study_id, d, vote_ids, cells)])


# A decision to write: study_id, the rule's decision, the vote ids it decided on, a grid's cells (or None).
DecisionRow = tuple[str, Decision, list[str], list[dict] | None]


async def save_decisions(conn: psycopg.AsyncConnection, decisions: list[DecisionRow]) -> None:
    """`save_decision` for several studies (study_id, decision, vote_ids, cells) in one statement:
    a batch of votes that decides many studies writes their decisions together, not one by one.
    Its arrays travel in binary, as `record_votes`' do (no escaping of each JSON value in Python)."""
    if not decisions:
        return
    await conn.execute(
        "INSERT INTO decisions (study_id, accepted, labels, rule, rule_version, needs_adjudication, reason, vote_ids,"
        " cells) SELECT study_id, accepted, labels::jsonb, rule, rule_version, needs_adjudication, reason,"
        " vote_ids::jsonb, cells::jsonb FROM unnest(%b::text[], %b::bool[], %b::text[], %b::text[], %b::text[],"
        " %b::bool[], %b::text[], %b::text[], %b::text[]) WITH ORDINALITY AS d(study_id, accepted, labels, rule,"
        " rule_version, needs_adjudication, reason, vote_ids, cells, n) ORDER BY n",
        ([s for s, _, _, _ in decisions], [d.accepted for _, d, _, _ in decisions],
         [json.dumps(list(d.labels)) for _, d, _, _ in decisions], [d.rule for _, d, _, _ in decisions],
         [d.rule_version for _, d, _, _ in decisions], [d.needs_adjudication for _, d, _, _ in decisions],
         [d.reason for _, d, _, _ in decisions], [json.dumps(v) for _, _, v, _ in decisions],
         [json.dumps(c) if c is not None else None for _, _, _, c in decisions]),
    )


async def accepted_studies(conn: psycopg.AsyncConnection, protocol: str) -> list[dict]:
    """Accepted studies with their effective labels and cells, and their provenance: the rule's
    name and version, whether (and by whom) a curator adjudicated, and the counted votes (rows
    with `reader_id` and the judgement's fields) the rule decided on."""
    cur = await conn.execute(
        "SELECT d.study_id, a.patient_id, d.labels, a.objects, d.cells, x.rule, x.rule_version, d.adjudicated,"
        " d.adjudicator, d.adjudication_id FROM effective_decisions d"
        " JOIN assignments a USING (study_id) JOIN decisions x USING (study_id)"
        " WHERE d.accepted AND a.protocol = %s ORDER BY d.study_id", (protocol,))
    studies = await cur.fetchall()
    cur = await conn.execute(
        f"SELECT v.study_id, v.reader_id, {_JUDGEMENT_COLUMNS} FROM votes v JOIN assignments a USING (study_id)"
        " JOIN effective_decisions d USING (study_id) WHERE v.counted AND d.accepted AND a.protocol = %s"
        " ORDER BY v.study_id, v.cast_at, v.vote_id", (protocol,))
    votes: dict[str, list[dict]] = {}
    for row in await cur.fetchall():
        vote = _with_judgement(row)
        votes.setdefault(vote.pop("study_id"), []).append(vote)
    return [{**s, "votes": votes.get(s["study_id"], [])} for s in studies]


async def funnel_counts(conn: psycopg.AsyncConnection, protocol: str) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT count(*) AS sampled, count(d.study_id) AS decided, count(*) FILTER (WHERE d.accepted) AS accepted"
        " FROM assignments a LEFT JOIN effective_decisions d USING (study_id) WHERE a.protocol = %s", (protocol,))
    return dict(await cur.fetchone())


async def release_exists(conn: psycopg.AsyncConnection, release_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM releases WHERE release_id = %s", (release_id,))
    return await cur.fetchone() is not None


async def save_release(conn: psycopg.AsyncConnection, release_id: str, protocol: str, plan_json: str,
                       released: list[str], holdout: dict[str, list[str]], manifest_key: str,
                       manifest_sha: str) -> None:
    await conn.execute(
        "INSERT INTO releases (release_id, protocol, plan, released, holdout, manifest_key, manifest_sha256)"
        " VALUES (%s,%s,%s,%s,%s,%s,%s)",
        (release_id, protocol, plan_json, json.dumps(released), json.dumps(sorted(holdout)), manifest_key,
         manifest_sha),
    )
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO holdout_truth (release_id, study_id, labels) VALUES (%s, %s, %s)",
            [(release_id, sid, json.dumps(labels)) for sid, labels in sorted(holdout.items())],
        )


async def set_readers(conn: psycopg.AsyncConnection, study_id: str, readers: list[str], moved_from: str) -> None:
    """A reassignment changed who reads the study (review-reoffered); `moved_from` is remembered
    as a former reader, whose vote may still arrive if it beat the move."""
    await conn.execute(
        "UPDATE assignments SET readers = %s,"
        " former_readers = CASE WHEN former_readers ? %s THEN former_readers ELSE former_readers || %s END"
        " WHERE study_id = %s", (json.dumps(readers), moved_from, json.dumps([moved_from]), study_id))


# --- adjudication -------------------------------------------------------------------------


async def effective_decision(conn: psycopg.AsyncConnection, study_id: str) -> dict | None:
    cur = await conn.execute("SELECT * FROM effective_decisions WHERE study_id = %s", (study_id,))
    return await cur.fetchone()


async def save_adjudication(conn: psycopg.AsyncConnection, cmd: AdjudicationRequested, labels: list[str],
                            previous: dict, cells: list[dict] | None = None) -> bool:
    """Append the adjudication (with a grid protocol's cells after the ruling); False when this
    adjudication id was recorded before."""
    cur = await conn.execute(
        "INSERT INTO adjudications (adjudication_id, study_id, curator_id, accepted, labels, note,"
        " previous_accepted, previous_labels, cells) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
        " ON CONFLICT (adjudication_id) DO NOTHING RETURNING seq",
        (cmd.adjudication_id, cmd.study_id, cmd.curator_id, cmd.accepted, json.dumps(labels), cmd.note,
         previous["accepted"], json.dumps(previous["labels"]), json.dumps(cells) if cells is not None else None))
    return await cur.fetchone() is not None


async def resolve_flags(conn: psycopg.AsyncConnection, study_id: str, curator_id: str) -> None:
    await conn.execute("UPDATE flags SET resolved_at = now(), resolved_by = %s WHERE study_id = %s"
                       " AND resolved_at IS NULL", (curator_id, study_id))


# --- reports and gauges -------------------------------------------------------------------


async def report_rows(conn: psycopg.AsyncConnection, protocol: str, *,
                      provenance: bool = True) -> tuple[list[dict], list[dict]]:
    """Decided studies (with their suggestion, tier, provenance, objects and effective decision)
    and their counted votes (with the judgement's fields): what agreement is computed from.
    `provenance=False` leaves out what the live agreement gauge never reads, the largest columns:
    the LLM provenance and the instance list."""
    extra = " a.extraction, a.mapping, a.objects," if provenance else ""
    cur = await conn.execute(
        f"SELECT a.study_id, a.patient_id, a.suggested, a.difficulty,{extra} d.accepted, d.labels"
        " FROM assignments a JOIN effective_decisions d USING (study_id) WHERE a.protocol = %s"
        " ORDER BY a.study_id", (protocol,))
    studies = await cur.fetchall()
    cur = await conn.execute(
        f"SELECT v.study_id, v.reader_id, v.seconds_spent, {_JUDGEMENT_COLUMNS}"
        " FROM votes v JOIN assignments a USING (study_id) JOIN decisions d USING (study_id)"
        " WHERE v.counted AND a.protocol = %s ORDER BY v.study_id, v.cast_at, v.vote_id", (protocol,))
    return studies, [_with_judgement(r) for r in await cur.fetchall()]


async def gauge_fingerprint(conn: psycopg.AsyncConnection) -> dict[str, int]:
    """Row counts of what the gauges are computed from. These tables only grow (and a flag is
    resolved once, never reopened), so any change to the gauges' inputs changes a count; counts,
    not max(id): a row with a smaller serial id can commit after one with a larger."""
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM assignments) AS assignments, (SELECT count(*) FROM decisions) AS decisions,"
        " (SELECT count(*) FROM adjudications) AS adjudications, (SELECT count(*) FROM flags) AS flags,"
        " (SELECT count(*) FROM flags WHERE resolved_at IS NOT NULL) AS resolved_flags")
    row = await cur.fetchone()
    assert row is not None
    return dict(row)


async def study_states(conn: psycopg.AsyncConnection) -> dict[str, int]:
    """How many studies are in each curation state (bounded label set for a gauge)."""
    cur = await conn.execute(
        "SELECT count(*) FILTER (WHERE d.study_id IS NULL) AS awaiting_votes,"
        " count(*) FILTER (WHERE d.accepted) AS accepted,"
        " count(*) FILTER (WHERE NOT d.accepted AND NOT (d.needs_adjudication AND NOT d.adjudicated)) AS rejected,"
        " count(*) FILTER (WHERE d.needs_adjudication AND NOT d.adjudicated) AS awaiting_adjudication,"
        " count(*) FILTER (WHERE d.adjudicated) AS adjudicated"
        " FROM assignments a LEFT JOIN effective_decisions d USING (study_id)")
    counts = dict(await cur.fetchone())
    cur = await conn.execute("SELECT count(DISTINCT study_id) AS n FROM flags WHERE resolved_at IS NULL")
    counts["flagged"] = (await cur.fetchone())["n"]
    return counts


async def open_flags(conn: psycopg.AsyncConnection) -> dict[str, int]:
    """Unresolved flags by kind (the reason's first word), for the report."""
    cur = await conn.execute(
        "SELECT split_part(reason, ':', 1) AS kind, count(*) AS n FROM flags WHERE resolved_at IS NULL"
        " GROUP BY 1 ORDER BY 1")
    return {r["kind"]: r["n"] for r in await cur.fetchall()}


# --- evaluations --------------------------------------------------------------------------


async def get_release(conn: psycopg.AsyncConnection, release_id: str) -> dict | None:
    cur = await conn.execute("SELECT * FROM releases WHERE release_id = %s", (release_id,))
    return await cur.fetchone()


async def holdout_truth(conn: psycopg.AsyncConnection, release_id: str) -> dict[str, object]:
    cur = await conn.execute("SELECT study_id, labels FROM holdout_truth WHERE release_id = %s ORDER BY study_id",
                             (release_id,))
    return {r["study_id"]: r["labels"] for r in await cur.fetchall()}


async def holdout_patients(conn: psycopg.AsyncConnection, release_id: str) -> dict[str, str]:
    """Holdout study id -> patient id: the unit a holdout score's bootstrap resamples."""
    cur = await conn.execute("SELECT h.study_id, a.patient_id FROM holdout_truth h JOIN assignments a USING (study_id)"
                             " WHERE h.release_id = %s", (release_id,))
    return {r["study_id"]: r["patient_id"] for r in await cur.fetchall()}


async def save_evaluation(conn: psycopg.AsyncConnection, row: dict) -> None:
    await conn.execute(
        "INSERT INTO evaluations (evaluation_id, evaluator_id, release_id, submission_sha256, status, receipt,"
        " metric_version, result, error) VALUES (%(evaluation_id)s, %(evaluator_id)s, %(release_id)s,"
        " %(submission_sha256)s, %(status)s, %(receipt)s, %(metric_version)s, %(result)s, %(error)s)"
        " ON CONFLICT (evaluation_id) DO NOTHING",
        {**row, "result": json.dumps(row["result"]) if row["result"] is not None else None})


async def objects_to_check(conn: psycopg.AsyncConnection, study_ids: list[str] | None,
                           profile_version: str) -> list[dict]:
    """The distinct objects (object_key, sha256) of the given studies (None: of every accepted
    study) that have no check under `profile_version` for their recorded sha256 yet."""
    scope = "a.study_id = ANY(%s)" if study_ids is not None else \
        "a.study_id IN (SELECT study_id FROM effective_decisions WHERE accepted)"
    cur = await conn.execute(
        "SELECT DISTINCT o->>'object_key' AS object_key, o->>'sha256' AS sha256"
        " FROM assignments a CROSS JOIN LATERAL jsonb_array_elements(a.objects) o"
        f" WHERE {scope} AND NOT EXISTS (SELECT 1 FROM object_checks c WHERE c.object_key = o->>'object_key'"
        " AND c.profile_version = %s AND c.sha256 = o->>'sha256')",
        (*([study_ids] if study_ids is not None else []), profile_version))
    return list(await cur.fetchall())


async def save_object_checks(conn: psycopg.AsyncConnection, profile_version: str, checks: list) -> None:
    """Record object checks (object_checks.ObjectCheck), replacing an older one of the same key."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO object_checks (object_key, profile_version, sha256, etag, violations)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (object_key, profile_version) DO UPDATE SET"
            " sha256 = EXCLUDED.sha256, etag = EXCLUDED.etag, violations = EXCLUDED.violations, checked_at = now()",
            [(c.object_key, profile_version, c.sha256, c.etag, json.dumps(list(c.violations))) for c in checks])


async def passed_checks(conn: psycopg.AsyncConnection, objects: list[tuple[str, str]],
                        profile_version: str) -> dict[str, str]:
    """Of `(object_key, sha256)` pairs, those with a passing check of exactly those bytes under
    `profile_version`: object_key -> the ETag that was checked."""
    if not objects:
        return {}
    cur = await conn.execute(
        "SELECT c.object_key, c.etag FROM object_checks c JOIN unnest(%s::text[], %s::text[]) AS o(key, sha256)"
        " ON c.object_key = o.key AND c.sha256 = o.sha256"
        " WHERE c.profile_version = %s AND c.violations = '[]'::jsonb AND c.etag <> ''",
        ([k for k, _ in objects], [s for _, s in objects], profile_version))
    return {r["object_key"]: r["etag"] for r in await cur.fetchall()}


async def agreement_fingerprint(conn: psycopg.AsyncConnection) -> tuple[int, ...]:
    """Row counts of everything an agreement report and a release's accepted studies are read from
    (report_rows, accepted_studies: assignments, decisions, adjudications, votes). These tables only
    grow, so any later vote, re-vote, decision or adjudication changes the fingerprint. Of their
    columns only an assignment's are ever updated (its readers, at a re-offer): the sum of the
    assignments' xmin (the writing transaction's id, new at every update) covers those, and any
    other update made to them by hand."""
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM assignments) AS assignments, (SELECT count(*) FROM decisions) AS decisions,"
        " (SELECT count(*) FROM adjudications) AS adjudications, (SELECT count(*) FROM votes) AS votes,"
        " (SELECT coalesce(sum(xmin::text::bigint), 0) FROM assignments) AS written")
    row = await cur.fetchone()
    assert row is not None
    return tuple(int(row[k]) for k in ("assignments", "decisions", "adjudications", "votes", "written"))


async def undecided_studies(conn: psycopg.AsyncConnection, protocol: str, limit: int) -> list[str]:
    """Up to `limit` of the protocol's assigned studies with no decision yet, the likeliest to stay
    undecided first: the fewest counted votes, then the largest study id (the gateway offers a
    reader's oldest assignment, smallest study id first); none when every assigned study is
    decided. Reads every assigned study of the protocol: `still_undecided` is the cheap look
    that follows."""
    cur = await conn.execute(
        "SELECT a.study_id FROM assignments a WHERE a.protocol = %s"
        " AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.study_id = a.study_id)"
        " ORDER BY (SELECT count(*) FROM votes v WHERE v.study_id = a.study_id AND v.counted), a.study_id DESC"
        " LIMIT %s", (protocol, limit))
    return [r["study_id"] for r in await cur.fetchall()]


async def still_undecided(conn: psycopg.AsyncConnection, study_ids: list[str]) -> list[str]:
    """Those of `study_ids` with no decision yet, in the order given (one index look-up each)."""
    cur = await conn.execute(
        "SELECT s.study_id FROM unnest(%s::text[]) WITH ORDINALITY AS s(study_id, n)"
        " WHERE NOT EXISTS (SELECT 1 FROM decisions d WHERE d.study_id = s.study_id) ORDER BY s.n", (study_ids,))
    return [r["study_id"] for r in await cur.fetchall()]
