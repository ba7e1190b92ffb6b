"""Studies, their DICOM objects and the suggestion a reader sees."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import date

from pydantic import BaseModel

from services.common.contracts import DicomObject, LabelsSuggested
from services.gateway.repo.conn import Conn, Row

# The study's objects in the image endpoint's order (its `instance` index), for the hanging protocol.
OBJECT_VIEWS = ("(SELECT json_agg(json_build_object('series_description', o.series_description)"
                " ORDER BY o.series_instance_uid, o.instance_number) FROM study_objects o"
                " WHERE o.study_id = s.study_id) AS object_views")
FACT_COLUMNS = ("s.view_position, s.patient_sex, s.age_band, s.study_date, s.window_center, s.window_width,"
                " s.photometric_interpretation")


async def exists(conn: Conn, study_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM studies WHERE study_id = %s", (study_id,))
    return await cur.fetchone() is not None


async def objects(conn: Conn, study_id: str) -> list[Row]:
    """The study's objects (key, UIDs, description, number, modality, sha256) in instance order."""
    cur = await conn.execute(
        "SELECT object_key, sop_instance_uid, series_instance_uid, series_description, instance_number, modality,"
        " sha256 FROM study_objects WHERE study_id = %s ORDER BY series_instance_uid, instance_number",
        (study_id,))
    return await cur.fetchall()


async def view(conn: Conn, study_id: str) -> Row | None:
    """What the study view shows: report, facts, object views, the suggestion and the instance count."""
    cur = await conn.execute(
        f"SELECT s.report_text, {FACT_COLUMNS}, {OBJECT_VIEWS}, g.taxonomy_version, g.labels, g.unmapped,"
        " (SELECT count(*) FROM study_objects o WHERE o.study_id = s.study_id) AS instances"
        " FROM studies s LEFT JOIN suggestions g USING (study_id) WHERE s.study_id = %s", (study_id,))
    return await cur.fetchone()


async def instances(conn: Conn, study_id: str) -> set[tuple[str, int]]:
    """The study's (series instance UID, instance number) pairs: where a point may be."""
    cur = await conn.execute("SELECT series_instance_uid, instance_number FROM study_objects WHERE study_id = %s",
                             (study_id,))
    return {(r["series_instance_uid"], r["instance_number"]) for r in await cur.fetchall()}


async def object_digests(conn: Conn, study_id: str) -> list[tuple[str, str, str]]:
    """(sha256, object key, study id) of the study's objects, in instance order."""
    cur = await conn.execute("SELECT sha256, object_key FROM study_objects WHERE study_id = %s"
                             " ORDER BY series_instance_uid, instance_number", (study_id,))
    return [(r["sha256"], r["object_key"], study_id) for r in await cur.fetchall()]


async def open_read_digests(conn: Conn) -> list[tuple[str, str, str]]:
    """(sha256, an object key, a study id) of every object of a study still open for a reader,
    once per digest (the key and study of the same row)."""
    cur = await conn.execute(
        "SELECT DISTINCT ON (o.sha256) o.sha256, o.object_key, o.study_id FROM study_objects o WHERE o.study_id IN"
        " (SELECT study_id FROM assignments WHERE status = 'open') ORDER BY o.sha256, o.object_key")
    return [(r["sha256"], r["object_key"], r["study_id"]) for r in await cur.fetchall()]


# --- ingest -----------------------------------------------------------------------------------

async def insert(conn: Conn, study_id: str, patient_id: str, protocol: str, study_instance_uid: str,
                 report_text: str, correlation_id: str, facts: Sequence[object],
                 dicom_patient_key: str | None = None) -> bool:
    """Insert the study with its facts (in FACT_COLUMNS' order) and the keyed digest of its files'
    PatientID; False when the study id is already in."""
    cur = await conn.execute(
        "INSERT INTO studies (study_id, patient_id, protocol, study_instance_uid, report_text, correlation_id,"
        " view_position, patient_sex, age_band, study_date, window_center, window_width, photometric_interpretation,"
        " dicom_patient_key) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
        " ON CONFLICT (study_id) DO NOTHING RETURNING study_id",
        (study_id, patient_id, protocol, study_instance_uid, report_text, correlation_id, *facts, dicom_patient_key))
    return await cur.fetchone() is not None


async def lock_patient(conn: Conn, dicom_patient_key: str) -> None:
    """Serialise concurrent ingests of one DICOM patient until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (dicom_patient_key,))


async def other_with_dicom_patient(conn: Conn, dicom_patient_key: str, patient_id: str, study_id: str) -> Row | None:
    """Another study of the same DICOM patient under a different patient id, if any."""
    cur = await conn.execute(
        "SELECT study_id, patient_id FROM studies WHERE dicom_patient_key = %s AND patient_id <> %s"
        " AND study_id <> %s LIMIT 1", (dicom_patient_key, patient_id, study_id))
    return await cur.fetchone()


async def other_with_study_uid(conn: Conn, study_instance_uid: str, study_id: str) -> Row | None:
    """Another study (`other`) with this StudyInstanceUID (`shared`), if any."""
    cur = await conn.execute(
        "SELECT study_id AS other, study_instance_uid AS shared FROM studies"
        " WHERE study_instance_uid = %s AND study_id <> %s LIMIT 1", (study_instance_uid, study_id))
    return await cur.fetchone()


async def other_with_sop_uids(conn: Conn, sop_instance_uids: list[str], study_id: str) -> Row | None:
    """Another study (`other`) holding one of these SOP Instance UIDs (`shared`), if any."""
    cur = await conn.execute(
        "SELECT study_id AS other, sop_instance_uid AS shared FROM study_objects"
        " WHERE sop_instance_uid = ANY(%s) AND study_id <> %s LIMIT 1", (sop_instance_uids, study_id))
    return await cur.fetchone()


async def other_with_pixel_digests(conn: Conn, pixel_sha256s: list[str], study_id: str) -> Row | None:
    """Another study (`other`) holding an object with one of these pixel digests (`pixel_sha256`,
    its SOP Instance UID as `shared`), if any."""
    if not pixel_sha256s:
        return None
    cur = await conn.execute(
        "SELECT study_id AS other, sop_instance_uid AS shared, pixel_sha256 FROM study_objects"
        " WHERE pixel_sha256 = ANY(%s) AND study_id <> %s ORDER BY study_id, sop_instance_uid LIMIT 1",
        (pixel_sha256s, study_id))
    return await cur.fetchone()


async def lock_images(conn: Conn, keys: Sequence[str]) -> None:
    """Serialise concurrent ingests that could share an image (a UID or a pixel digest in `keys`)
    until the transaction ends, so two twins cannot both pass the check. Keys fall into 64
    buckets (at most 64 locks, whatever the study's size: Postgres's shared lock table is
    64 per connection by default), taken in one order (no deadlock)."""
    buckets = sorted({f"{hashlib.sha256(k.encode()).digest()[0] % 64:02d}" for k in keys})
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('radcurate-image:' || b, 0))"
                       " FROM unnest(%s::text[]) AS b ORDER BY b", (buckets,))


async def set_manifest(conn: Conn, study_id: str, manifest_key: str) -> None:
    """Record the key of the instance manifest the study's report-ingested event references: ''
    when the event carries its instance list inline (then no stored manifest is the study's)."""
    await conn.execute("UPDATE studies SET objects_manifest_key = %s WHERE study_id = %s", (manifest_key, study_id))


async def manifest_owner(conn: Conn, study_id: str) -> Row | None:
    """Whether the study exists (None: no row) and which manifest key it records (`key`: '' for
    an instance list carried inline, None for a study ingested before keys were recorded)."""
    cur = await conn.execute("SELECT objects_manifest_key AS key FROM studies WHERE study_id = %s", (study_id,))
    return await cur.fetchone()


async def lock_manifests(conn: Conn, study_id: str) -> None:
    """A session lock on the study's manifests (see manifest_gc): held by ingest while it writes
    one and by the collector while it checks and deletes; release with unlock_manifests."""
    await conn.execute("SELECT pg_advisory_lock(hashtextextended('radcurate-manifest:' || %s, 0))", (study_id,))
    await conn.commit()  # the lock is the session's: no transaction stays open around the store call


async def unlock_manifests(conn: Conn, study_id: str) -> None:
    await conn.execute("SELECT pg_advisory_unlock(hashtextextended('radcurate-manifest:' || %s, 0))", (study_id,))
    await conn.commit()


async def lock_manifests_of(conn: Conn, study_ids: Sequence[str]) -> None:
    """`lock_manifests` for a batch's studies in one statement, in sorted order."""
    await conn.execute("SELECT count(pg_advisory_lock(hashtextextended('radcurate-manifest:' || s, 0)))"
                       " FROM unnest(%s::text[]) AS s", (sorted(set(study_ids)),))
    await conn.commit()


async def unlock_manifests_of(conn: Conn, study_ids: Sequence[str]) -> None:
    await conn.execute("SELECT count(pg_advisory_unlock(hashtextextended('radcurate-manifest:' || s, 0)))"
                       " FROM unnest(%s::text[]) AS s", (sorted(set(study_ids)),))
    await conn.commit()


async def insert_objects(conn: Conn, study_id: str, objects: list[DicomObject]) -> None:
    await insert_objects_of(conn, [(study_id, o) for o in objects])


async def present(conn: Conn, study_ids: Sequence[str]) -> set[str]:
    """Which of these study ids are already ingested (one query for a batch)."""
    cur = await conn.execute("SELECT study_id FROM studies WHERE study_id = ANY(%s)", (list(study_ids),))
    return {r["study_id"] for r in await cur.fetchall()}


async def holders_of(conn: Conn, study_uids: Sequence[str], sop_uids: Sequence[str], pixel_sha256s: Sequence[str],
                     dicom_patient_keys: Sequence[str]) -> dict[str, list[Row]]:
    """Every stored study holding one of a batch's StudyInstanceUIDs (`study_uid`: study_id,
    shared), SOP Instance UIDs (`sop`: study_id, shared), pixel digests (`pixels`: study_id,
    shared, pixel_sha256) or DICOM patient keys (`patient`: study_id, patient_id,
    dicom_patient_key): what other_with_study_uid, other_with_sop_uids, other_with_pixel_digests
    and other_with_dicom_patient ask per study, in one statement for the whole batch (a batch
    asks twice: four statements each cost the gateway and Postgres a round trip apiece)."""
    cur = await conn.execute(_HOLDERS, (list(study_uids), list(sop_uids), list(pixel_sha256s),
                                        list(dicom_patient_keys)))
    out: dict[str, list[Row]] = {"study_uid": [], "sop": [], "pixels": [], "patient": []}
    for row in await cur.fetchall():
        what, study_id, a, b = row["what"], row["study_id"], row["a"], row["b"]
        if what == "study_uid" or what == "sop":
            out[what].append({"study_id": study_id, "shared": a})
        elif what == "pixels":
            out[what].append({"study_id": study_id, "shared": a, "pixel_sha256": b})
        else:
            out[what].append({"study_id": study_id, "patient_id": a, "dicom_patient_key": b})
    return out


# holders_of's four look-ups as one statement: each branch uses its column's index as before.
_HOLDERS = (
    "SELECT 'study_uid' AS what, study_id, study_instance_uid AS a, NULL::text AS b FROM studies"
    " WHERE study_instance_uid = ANY(%b::text[])"
    " UNION ALL SELECT 'sop', study_id, sop_instance_uid, NULL FROM study_objects"
    " WHERE sop_instance_uid = ANY(%b::text[])"
    " UNION ALL SELECT 'pixels', study_id, sop_instance_uid, pixel_sha256 FROM study_objects"
    " WHERE pixel_sha256 = ANY(%b::text[])"
    " UNION ALL SELECT 'patient', study_id, patient_id, dicom_patient_key FROM studies"
    " WHERE dicom_patient_key = ANY(%b::text[])"
)


async def analyze_holders(conn: Conn) -> None:
    """Have Postgres gather statistics on the tables holders_of reads. Without any (a fresh
    database: autovacuum analyzes a table at most once a minute), the planner takes `= ANY` of a
    batch's 32 values to match ~15% of the rows and scans every row of both tables in each of
    holders_of's four branches, twice per batch: 2.8-7.6 ms of Postgres per statement at 4,000
    studies, growing with the tables, against 0.14-0.28 ms by their indexes once analyzed."""
    await conn.execute("ANALYZE studies, study_objects")


async def insert_many(conn: Conn, rows: Sequence[tuple[object, ...]]) -> set[str]:
    """Insert a batch's studies (`insert`'s columns in its order, then the instance manifest's key);
    returns the ids inserted (one already in is left as it is)."""
    if not rows:
        return set()
    cur = await conn.execute(_INSERT_STUDIES, [[_text(v) for v in column] for column in zip(*rows, strict=True)])
    return {r["study_id"] for r in await cur.fetchall()}


async def insert_objects_of(conn: Conn, objects: Sequence[tuple[str, DicomObject]]) -> None:
    """`insert_objects` for a batch: (study id, object) pairs in one statement."""
    if not objects:
        return
    rows = [(study_id, o.sop_instance_uid, o.series_instance_uid, o.series_description, str(o.instance_number),
             o.modality, o.object_key, o.sha256, json.dumps(o.pixel_spacing) if o.pixel_spacing else None,
             o.pixel_sha256) for study_id, o in objects]
    await conn.execute(_INSERT_OBJECTS, [list(column) for column in zip(*rows, strict=True)])


# A batch's rows in one INSERT each from arrays (unnest), not executemany's statement per row:
# Postgres parses, plans and executes once, and psycopg dumps each column once (binary text
# arrays, as outbox._INSERT_MANY). Every value travels as text and takes its column's type in
# the statement (a date as ISO text, a float as its shortest repr, both read back exactly).
_INSERT_STUDIES = (
    "INSERT INTO studies (study_id, patient_id, protocol, study_instance_uid, report_text, correlation_id,"
    " view_position, patient_sex, age_band, study_date, window_center, window_width,"
    " photometric_interpretation, dicom_patient_key, objects_manifest_key)"
    " SELECT s, p, pr, u, r, c, vp, sx, ab, sd::date, wc::double precision, ww::double precision, pi, dk, mk"
    " FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
    " %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[])"
    " AS v(s, p, pr, u, r, c, vp, sx, ab, sd, wc, ww, pi, dk, mk)"
    " ON CONFLICT (study_id) DO NOTHING RETURNING study_id"
)
_INSERT_OBJECTS = (
    "INSERT INTO study_objects (study_id, sop_instance_uid, series_instance_uid, series_description,"
    " instance_number, modality, object_key, sha256, pixel_spacing, pixel_sha256)"
    " SELECT s, sop, ser, sd, n::integer, m, k, h, ps::jsonb, px"
    " FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
    " %b::text[], %b::text[]) AS v(s, sop, ser, sd, n, m, k, h, ps, px)"
    " ON CONFLICT DO NOTHING"
)


def _text(value: object) -> str | None:
    """A study column's value as the text its SQL type reads back exactly (None stays NULL)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


async def lock_patients(conn: Conn, dicom_patient_keys: Sequence[str]) -> None:
    """`lock_patient` for several patients in one statement, in sorted order (two batches that
    share patients take their locks in the same order, so they wait for each other, never deadlock)."""
    if dicom_patient_keys:
        await conn.execute("SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest(%s::text[]) AS k",
                           (sorted(set(dicom_patient_keys)),))


# --- the suggestion (labels-suggested) ----------------------------------------------------------

def dump(items: Sequence[BaseModel]) -> str:
    """A list of models as the JSON a jsonb column keeps."""
    return json.dumps([i.model_dump(mode="json") for i in items])


async def save_suggestions(conn: Conn, batch: Sequence[LabelsSuggested]) -> None:
    """Keep (or replace) the suggestions readers will see, each study once: one statement for a
    consumer batch of them (binary text arrays, cast to jsonb by Postgres), not one per study."""
    if not batch:
        return
    columns: tuple[list[str], ...] = ([], [], [], [], [], [])
    for e in batch:
        for column, value in zip(columns, (e.study_id, e.taxonomy_version, dump(e.labels), dump(e.unmapped_findings),
                                           e.extraction.model_dump_json(), e.mapping.model_dump_json()), strict=True):
            column.append(value)
    await conn.execute(
        "INSERT INTO suggestions (study_id, taxonomy_version, labels, unmapped, extraction, mapping)"
        " SELECT s, t, l::jsonb, u::jsonb, x::jsonb, m::jsonb"
        " FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[]) AS r(s, t, l, u, x, m)"
        " ON CONFLICT (study_id) DO UPDATE SET labels = EXCLUDED.labels,"
        " unmapped = EXCLUDED.unmapped, taxonomy_version = EXCLUDED.taxonomy_version",
        columns)
