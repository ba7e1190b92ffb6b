"""Trim the local broker's log: delete the record batches every consumer of a topic has read.

Why: tansu (0.6.0, its S3 engine) keeps each partition's log as one S3 object per produced batch
under `clusters/<cluster>/topics/<topic>/partitions/<p>/records/<offset>.batch`, and every fetch
that finds data first LISTs that whole folder (no start-after), 1,000 keys per page. So a fetch
costs in proportion to everything the partition ever held, and the S3 server's and the broker's
CPU per event grew with the data: one event produced, fetched and committed alone cost 11–13 ms
of S3 CPU and 3–4 ms of broker CPU on an empty partition, and 62 ms and 25 ms on one holding
1,500 batches (`bench/bench_broker_storage.py --held`). tansu 0.6.0 has no retention to bound it:
DeleteRecords is `todo!()` in its S3 engine (the broker's connection panics), and time-based
retention would drop events a stopped service has not read yet.

What this does instead, every INTERVAL_S: for each topic of the event catalogue (never a
dead-letter topic, never a topic the catalogue does not name), and each of its partitions whose
high watermark moved since the last look, it reads the committed offset of every consumer group
the catalogue names for the topic, and deletes the batches that end at or below the lowest of
them. A batch's end is the next batch's base offset, so the newest batch always stays; a topic
with a group that has not committed yet is left alone (that group would start from the
beginning). What is deleted was read and committed by every group that reads the topic, so no
service can fetch it again (a consumer resumes from its group's commit or later), and tansu's
fetch GETs only the batches at or after the offset asked for: a listing taken just before a
delete never makes it GET a deleted batch. The outbox in Postgres stays the record of every
event.

Cost: one GET of a watermark per partition per round while idle; per trimmed batch a share of
one multi-object DELETE. The process runs only beside the embedded tansu (an external Kafka has
its own retention and an indexed log).

Run: python -m radcurate.stack.logtrim   (RADCURATE_LOGTRIM_* variables, set by `radcurate up`)
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

log = logging.getLogger("radcurate.logtrim")

CLUSTER = "tansu_cluster"  # tansu's default --cluster-id, which the stack does not change
INTERVAL_S = 10.0  # one watermark GET per catalogue topic per round while idle (18 topics: ~2 GET/s)


def consumer_groups() -> dict[str, tuple[str, ...]]:
    """Each catalogue topic and the consumer groups that read it (`radcurate-<service>`, as
    services/common/consumer.py names them)."""
    from services.common.catalogue import CATALOGUE
    groups: dict[str, set[str]] = {}
    for ch in CATALOGUE:
        groups.setdefault(ch.topic, set()).update(f"radcurate-{svc}" for svc in ch.consumers)
    return {topic: tuple(sorted(gs)) for topic, gs in groups.items() if gs}


def _partition_dir(topic: str, partition: int) -> str:
    return f"clusters/{CLUSTER}/topics/{topic}/partitions/{partition:0>10}/"


def doomed(bases: Iterable[int], committed: int) -> list[int]:
    """The base offsets of the batches that end at or below `committed`: each batch ends where
    the next one starts, so the newest batch is never among them."""
    ordered = sorted(bases)
    return [base for base, following in zip(ordered, ordered[1:], strict=False) if following <= committed]


@dataclass
class Trimmer:
    client: Minio
    bucket: str
    groups: Mapping[str, tuple[str, ...]]
    partitions: dict[str, int] = field(default_factory=dict)
    seen: dict[tuple[str, int], int] = field(default_factory=dict)  # high watermark at the last trim

    def _json(self, key: str) -> dict | None:
        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket"):
                return None
            raise
        try:
            return json.loads(response.read())
        finally:
            response.close()
            response.release_conn()

    def _partition_counts(self) -> None:
        """Each topic's partition count, from the cluster's metadata (tansu 0.6.0 keeps every
        topic in `meta.json`); read while a catalogue topic is still unknown (not created yet)."""
        if all(topic in self.partitions for topic in self.groups):
            return
        topics = (self._json(f"clusters/{CLUSTER}/meta.json") or {}).get("topics") or {}
        for topic in self.groups:
            if topic in topics:
                self.partitions[topic] = int(topics[topic]["topic"]["num_partitions"])

    def committed(self, topic: str, partition: int) -> int | None:
        """The lowest offset the topic's groups committed on the partition; None while any of
        them has not committed there."""
        offsets = []
        for group in self.groups[topic]:
            commit = self._json(f"clusters/{CLUSTER}/groups/consumers/{group}/offsets/{topic}"
                                f"/partitions/{partition:0>10}.json")
            if commit is None or commit.get("offset") is None:
                return None
            offsets.append(int(commit["offset"]))
        return min(offsets)

    def trim_partition(self, topic: str, partition: int) -> int:
        """Delete the partition's batches every group has read; returns how many."""
        watermark = self._json(_partition_dir(topic, partition) + "watermark.json") or {}
        high = watermark.get("high")
        if high is None or self.seen.get((topic, partition)) == high:
            return 0  # nothing produced since the last trim
        low = self.committed(topic, partition)
        if low is None:
            return 0
        records = _partition_dir(topic, partition) + "records/"
        bases = [int(o.object_name.rsplit("/", 1)[1][:20])
                 for o in self.client.list_objects(self.bucket, prefix=records, recursive=True)]
        gone = doomed(bases, low)
        if gone:
            errors = list(self.client.remove_objects(
                self.bucket, (DeleteObject(f"{records}{base:0>20}.batch") for base in gone)))
            if errors:
                raise RuntimeError(f"deleting {topic}/{partition}: {errors[0]}")
        if low >= high:
            self.seen[(topic, partition)] = high  # all read: nothing to do until the next produce
        return len(gone)

    def trim(self) -> int:
        deleted = 0
        self._partition_counts()
        for topic in self.groups:
            for partition in range(self.partitions.get(topic, 0)):
                deleted += self.trim_partition(topic, partition)
        return deleted


def _settings(env: Mapping[str, str]) -> tuple[Minio, str, float]:
    client = Minio(env["RADCURATE_LOGTRIM_S3_ENDPOINT"], access_key=env["RADCURATE_LOGTRIM_S3_ACCESS_KEY"],
                   secret_key=env["RADCURATE_LOGTRIM_S3_SECRET_KEY"], secure=False, region="us-east-1")
    return client, env["RADCURATE_LOGTRIM_BUCKET"], float(env.get("RADCURATE_LOGTRIM_INTERVAL_S", INTERVAL_S))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    client, bucket, interval = _settings(os.environ)
    trimmer = Trimmer(client, bucket, consumer_groups())
    log.info("trimming %d topics every %.1f s", len(trimmer.groups), interval)
    while True:
        started = time.monotonic()
        try:
            deleted = trimmer.trim()
            if deleted:
                log.debug("deleted %d batches", deleted)
        except Exception:  # noqa: BLE001 - a failed round (S3 restarting) is retried next round
            log.exception("trim round failed")
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


if __name__ == "__main__":
    raise SystemExit(main())
