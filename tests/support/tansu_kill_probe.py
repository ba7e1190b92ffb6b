"""Does tansu (S3 storage engine on the local SeaweedFS) lose or re-use acknowledged offsets when it
or its S3 server is SIGKILLed and restarted? A standalone probe, not a pytest test:

    PYTHONPATH=$PWD .venv/bin/python -m tests.support.tansu_kill_probe --variant both --messages 300

It starts only the S3 server and the broker (as `radcurate up` does, via radcurate.stack.infra) in a
temporary state dir, creates a 2-partition topic, produces keyed messages with acks=all (no
idempotence, as the services' producers) recording every ack's (partition, offset), and runs a
consumer group that commits after each batch. While producing it SIGKILLs the S3 server and/or the
broker (whole process group, as chaos.py does) and restarts it on the same ports and data. Then a
fresh consumer reads every partition from offset 0 and the probe checks:

1. every acked (partition, offset) is in the log with the acked value;
2. no offset was acked for two different messages (offset re-use);
3. ListOffsets' end offset == the number of records read from the log;
4. the group's committed offset never exceeds what the group actually received.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from radcurate.stack import infra, seaweed
from radcurate.stack.procs import alive, stop
from services.common.kafka import ensure_topics, make_producer

TOPIC = "probe"
GROUP = "probe-group"


class Stack:
    """S3 server + broker in `state_dir`, each killable and restartable on its ports and data."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.secret = secrets.token_urlsafe(24)
        self.s3: dict[str, Any] = {}
        self.kafka: dict[str, Any] = {}

    def start_s3(self) -> None:
        self.s3 = infra.start_s3(self.dir / "s3", self.dir / "logs" / "s3.log", "radcurate", self.secret,
                                 [infra.TANSU_BUCKET], self.s3 or None)

    def start_kafka(self) -> None:
        self.kafka = infra.start_kafka(self.s3, self.dir / "logs" / "kafka.log", self.kafka.get("port"))

    @property
    def bootstrap(self) -> str:
        return str(self.kafka["bootstrap"])

    def kill(self, part: str) -> None:
        pid = (self.s3 if part == "s3" else self.kafka)["pid"]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.05)
        if part == "s3":
            seaweed.remove_sockets(self.s3["ports"])

    def restart(self, part: str) -> None:
        if part == "s3":
            port = self.s3["ports"]["s3"]
            self.start_s3()
            assert self.s3["ports"]["s3"] == port, "s3 came back on another port"
        else:
            port = self.kafka["port"]
            self.start_kafka()
            assert self.kafka["port"] == port, "broker came back on another port"

    def watermarks(self) -> dict[str, str]:
        """The broker's own per-partition watermark objects in its bucket (small JSON)."""
        client = infra._client(self.s3["endpoint"], self.s3["access_key"], self.s3["secret_key"])
        found = {}
        for obj in client.list_objects(infra.TANSU_BUCKET, recursive=True):
            name = obj.object_name
            if TOPIC in name and "watermark" in name.lower():
                found[name] = client.get_object(infra.TANSU_BUCKET, name).read().decode(errors="replace")[:300]
        return found

    def keys(self) -> list[str]:
        client = infra._client(self.s3["endpoint"], self.s3["access_key"], self.s3["secret_key"])
        return [o.object_name for o in client.list_objects(infra.TANSU_BUCKET, recursive=True)]

    def down(self) -> None:
        for info in (self.kafka, self.s3):
            if info.get("pid"):
                stop(info["pid"], timeout=5)
        if self.s3:
            seaweed.remove_sockets(self.s3["ports"])


async def create_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()


class Probe:
    def __init__(self, stack: Stack, messages: int, rate: float, burst: int = 1, producers: int = 1) -> None:
        self.stack = stack
        self.producers = producers
        self.burst = burst
        self.messages = messages
        self.rate = rate
        self.acks: list[tuple[int, int, str, float]] = []  # (partition, offset, value, when)
        self.send_errors = 0
        self.received: dict[int, set[int]] = {0: set(), 1: set()}  # offsets the group got
        self.received_values: dict[tuple[int, int], str] = {}
        self.commits: list[tuple[float, int, int]] = []  # (when, partition, committed offset)
        self.commit_errors = 0
        self.consumer_restarts = 0
        self.produced_all = asyncio.Event()
        self.t0 = time.monotonic()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    async def produce(self) -> None:
        """`producers` producers (as several services' outbox relays write one topic), each its share."""
        try:
            await asyncio.gather(*(self._produce(k) for k in range(self.producers)))
        finally:
            self.produced_all.set()

    async def _produce(self, k: int) -> None:
        """Messages sent `burst` at a time (as the outbox relay sends a batch, so the broker gets
        multi-record batches), each retried until acked: a retry may duplicate it."""
        producer = make_producer(self.stack.bootstrap)  # the services' settings: acks=all, 40 s request timeout
        await producer.start()
        try:
            pending = [f"m{i:05d}" for i in range(k, self.messages, self.producers)]
            while pending:
                burst, pending = pending[:self.burst], pending[self.burst:]
                while burst:
                    futures = [(v, await producer.send(TOPIC, v.encode(), key=f"k{int(v[1:]) % 7}".encode()))
                               for v in burst]
                    failed = []
                    for value, fut in futures:
                        try:
                            md = await asyncio.wait_for(fut, 90)
                            self.acks.append((md.partition, md.offset, value, self.now()))
                        except Exception:  # noqa: BLE001 - broker or S3 down: retry as a relay would
                            self.send_errors += 1
                            failed.append(value)
                    burst = failed
                    if failed:
                        await asyncio.sleep(0.5)
                await asyncio.sleep(self.burst * self.producers / self.rate)
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def consume(self) -> None:
        """A consumer group that commits what it processed after each batch; re-created on errors."""
        idle_since: float | None = None
        while True:
            consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=self.stack.bootstrap, group_id=GROUP,
                                        enable_auto_commit=False, auto_offset_reset="earliest",
                                        session_timeout_ms=6000, heartbeat_interval_ms=1500,
                                        request_timeout_ms=8000)
            try:
                await consumer.start()
                while True:
                    batch = await consumer.getmany(timeout_ms=1000, max_records=50)
                    if not batch:
                        if self.produced_all.is_set() and self._caught_up():
                            idle_since = idle_since or time.monotonic()
                            if time.monotonic() - idle_since > 8:
                                return
                        continue
                    idle_since = None
                    offsets = {}
                    for tp, records in batch.items():
                        for r in records:
                            self.received[tp.partition].add(r.offset)
                            self.received_values[(tp.partition, r.offset)] = r.value.decode()
                        offsets[tp] = records[-1].offset + 1
                    await consumer.commit(offsets)
                    for tp, off in offsets.items():
                        self.commits.append((self.now(), tp.partition, off))
            except Exception as exc:  # noqa: BLE001 - broker or S3 down: a service would restart its loop
                self.commit_errors += 1
                print(f"  [{self.now()}s] consumer error {type(exc).__name__}: {exc}", flush=True)
                self.consumer_restarts += 1
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    def _caught_up(self) -> bool:
        acked = {(p, o) for p, o, _, _ in self.acks}
        return all(o in self.received[p] for p, o in acked)


async def faults(stack: Stack, probe: Probe, variant: str, first_s: float, gap_s: float, down_s: float,
                 rounds: int, like_up: bool) -> list[str]:
    parts = {"s3": ["s3"], "kafka": ["kafka"], "both": ["s3", "kafka"], "overlap": []}[variant]
    log = []
    await asyncio.sleep(first_s)
    for _ in range(rounds):
        if variant == "overlap":  # the broker dies while its S3 server is down, and starts before it is back
            t = probe.now()
            await asyncio.to_thread(stack.kill, "s3")
            await asyncio.sleep(down_s)
            await asyncio.to_thread(stack.kill, "kafka")
            restart_s3 = asyncio.create_task(asyncio.to_thread(stack.restart, "s3"))
            await asyncio.to_thread(stack.restart, "kafka")
            await restart_s3
            line = f"killed s3 then kafka at {t}s, both back at {probe.now()}s (acks so far {len(probe.acks)})"
            print("  " + line, flush=True)
            log.append(line)
            await asyncio.sleep(gap_s)
            continue
        for part in parts:
            t = probe.now()
            await asyncio.to_thread(stack.kill, part)
            await asyncio.sleep(down_s)
            await asyncio.to_thread(stack.restart, part)
            if like_up:  # `radcurate up` (chaos.py's restart) then creates the topics it finds missing
                created = await ensure_topics(stack.bootstrap, (TOPIC,), partitions=2)
                if created:
                    print(f"  !! topic {TOPIC} reported missing after the {part} restart and re-created", flush=True)
                    log.append(f"topic re-created after {part} restart")
            line = f"killed {part} at {t}s, back at {probe.now()}s (acks so far {len(probe.acks)})"
            print("  " + line, flush=True)
            log.append(line)
            await asyncio.sleep(gap_s)
    return log


async def read_log(bootstrap: str) -> tuple[dict[int, list[tuple[int, str]]], dict[int, int], dict[int, int | None]]:
    """Every record of both partitions from offset 0, ListOffsets' ends, and the group's commits."""
    tps = [TopicPartition(TOPIC, p) for p in (0, 1)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", request_timeout_ms=15000)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        first_ends = dict(ends)
        await consumer.seek_to_beginning(*tps)
        log: dict[int, list[tuple[int, str]]] = {0: [], 1: []}
        idle = 0
        while idle < 5:
            batch = await consumer.getmany(timeout_ms=1000, max_records=500)
            idle = 0 if batch else idle + 1
            for tp, records in batch.items():
                log[tp.partition] += [(r.offset, r.value.decode()) for r in records]
        await asyncio.sleep(5)
        ends = await consumer.end_offsets(tps)  # again, later: a stale answer should have caught up
        print(f"  ListOffsets ends before reading {first_ends}, 5 s after {ends}", flush=True)
        ends = {tp: max(ends[tp], first_ends[tp]) for tp in tps}
    finally:
        await consumer.stop()
    group = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    await group.start()
    try:
        committed = {tp.partition: await group.committed(tp) for tp in tps}
    finally:
        await group.stop()
    return log, {tp.partition: off for tp, off in ends.items()}, committed


def check(probe: Probe, log: dict[int, list[tuple[int, str]]], ends: dict[int, int],
          committed: dict[int, int | None]) -> dict[str, Any]:
    at = {(p, o): v for p, recs in log.items() for o, v in recs}
    missing = [(p, o, v, t) for p, o, v, t in probe.acks if (p, o) not in at]
    wrong = [(p, o, v, at[(p, o)], t) for p, o, v, t in probe.acks if (p, o) in at and at[(p, o)] != v]
    by_offset: dict[tuple[int, int], set[str]] = {}
    for p, o, v, _ in probe.acks:
        by_offset.setdefault((p, o), set()).add(v)
    reused = {f"{p}:{o}": sorted(vs) for (p, o), vs in by_offset.items() if len(vs) > 1}
    values_in_log = {v for recs in log.values() for _, v in recs}
    acked_values = {v for _, _, v, _ in probe.acks}
    lost_values = sorted(acked_values - values_in_log)
    never_consumed = sorted(acked_values - set(probe.received_values.values()))
    max_commit = {p: max((o for _, q, o in probe.commits if q == p), default=0) for p in (0, 1)}
    over_commit = {p: (committed[p], max(probe.received[p], default=-1) + 1) for p in (0, 1)
                   if (committed[p] or 0) > max(probe.received[p], default=-1) + 1}
    # An offset the group consumed whose record was later replaced: the group committed past a
    # record it never saw (the fault test's symptom).
    replaced = sorted((p, o, v, at.get((p, o))) for (p, o), v in probe.received_values.items() if at.get((p, o)) != v)
    # Records below the group's committed offset that it never fetched: they became visible
    # behind its position (written late into a hole, or re-used offsets).
    skipped = sorted((p, o, v) for p, recs in log.items() for o, v in recs
                     if o not in probe.received[p] and o < (committed[p] or 0))
    dup_offsets_in_log = {p: len(recs) - len({o for o, _ in recs}) for p, recs in log.items()}
    return {
        "acks": len(probe.acks), "distinct_acked_values": len(acked_values), "send_errors": probe.send_errors,
        "log_records": {p: len(r) for p, r in log.items()},
        "log_offsets": {p: [r[0][0], r[-1][0]] if r else [] for p, r in log.items()},
        "list_offsets_end": ends,
        "end_matches_log": {p: ends[p] == len(log[p]) for p in (0, 1)},
        "committed_at_end": committed, "max_commit_seen": max_commit,
        "group_received": {p: len(s) for p, s in probe.received.items()},
        "consumer_restarts": probe.consumer_restarts,
        "acked_offsets_missing_from_log": len(missing), "missing_sample": missing[:8],
        "acked_offset_holds_other_value": len(wrong), "wrong_sample": wrong[:8],
        "offsets_acked_twice_for_different_messages": len(reused), "reused_sample": dict(list(reused.items())[:8]),
        "acked_messages_absent_from_log": len(lost_values), "lost_sample": lost_values[:8],
        "acked_messages_never_consumed_by_group": len(never_consumed), "never_consumed_sample": never_consumed[:8],
        "committed_beyond_received": over_commit,
        "log_records_skipped_by_group": len(skipped), "skipped_sample": skipped[:8],
        "group_consumed_offset_later_replaced": len(replaced), "replaced_sample": replaced[:8],
        "duplicate_offsets_in_log": dup_offsets_in_log,
    }


async def run(variant: str, messages: int, rate: float, rounds: int, down_s: float, keep: bool, burst: int,
              like_up: bool = True, producers: int = 1,
              consume_timeout: float = 60) -> dict[str, Any]:
    state_dir = Path(tempfile.mkdtemp(prefix=f"tansu-probe-{variant}-"))
    stack = Stack(state_dir)
    try:
        await asyncio.to_thread(stack.start_s3)
        await asyncio.to_thread(stack.start_kafka)
        await create_topic(stack.bootstrap)
        probe = Probe(stack, messages, rate, burst, producers)
        duration = messages / rate
        gap = duration * 0.6 / max(rounds * (2 if variant == "both" else 1), 1)
        fault_task = asyncio.create_task(
            faults(stack, probe, variant, duration * 0.2, gap, down_s, rounds, like_up)
            if variant != "none" else asyncio.sleep(0, result=[]))
        consume_task = asyncio.create_task(probe.consume())
        await probe.produce()
        fault_log = await fault_task
        try:  # the group stops once it has every acked offset: one it never gets is the finding
            await asyncio.wait_for(consume_task, consume_timeout)
        except TimeoutError:
            print(f"  !! the group still lacks acked offsets {consume_timeout:.0f} s after the last ack", flush=True)
        (state_dir / "acks.json").write_text(json.dumps(probe.acks))  # for a post-mortem with --keep
        log, ends, committed = await read_log(stack.bootstrap)
        watermarks = await asyncio.to_thread(stack.watermarks)
        result = {"variant": variant, "faults": fault_log, "s3_watermark_objects": watermarks,
                  **check(probe, log, ends, committed),
                  "state_dir": str(state_dir), "loadavg": os.getloadavg()}
        return result
    finally:
        stack.down()
        if not keep:
            import shutil
            shutil.rmtree(state_dir, ignore_errors=True)


async def list_offsets_demo(keep: bool) -> dict[str, Any]:
    """No faults: one 5-record batch, then 5 one-record batches within a second, on one partition
    each; what ListOffsets(latest) answers against what the log holds."""
    state_dir = Path(tempfile.mkdtemp(prefix="tansu-probe-listoffsets-"))
    stack = Stack(state_dir)
    try:
        await asyncio.to_thread(stack.start_s3)
        await asyncio.to_thread(stack.start_kafka)
        await create_topic(stack.bootstrap)
        producer = make_producer(stack.bootstrap)
        await producer.start()
        try:
            batch = producer.create_batch()
            for i in range(5):
                batch.append(key=None, value=f"b{i}".encode(), timestamp=None)
            await (await producer.send_batch(batch, TOPIC, partition=0))
            for i in range(5):
                await producer.send_and_wait(TOPIC, f"s{i}".encode(), partition=1)
        finally:
            await producer.stop()
        log, ends, _ = await read_log(stack.bootstrap)
        return {"log_records": {p: len(r) for p, r in log.items()}, "list_offsets_end": ends,
                "s3_watermark_objects": await asyncio.to_thread(stack.watermarks), "loadavg": os.getloadavg()}
    finally:
        stack.down()
        if not keep:
            import shutil
            shutil.rmtree(state_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=("none", "s3", "kafka", "both", "overlap", "listoffsets"), default="both")
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10.0, help="messages per second")
    parser.add_argument("--rounds", type=int, default=2, help="kills of each part")
    parser.add_argument("--down", type=float, default=1.0, help="seconds a killed part stays down")
    parser.add_argument("--burst", type=int, default=1, help="messages sent together (multi-record batches)")
    parser.add_argument("--no-ensure-topics", action="store_true",
                        help="after a restart, skip the list-and-create-missing-topics step `radcurate up` runs")
    parser.add_argument("--producers", type=int, default=1, help="concurrent producers on the topic")
    parser.add_argument("--keep", action="store_true", help="keep the state dir (logs, S3 data)")
    args = parser.parse_args()
    if args.variant == "listoffsets":
        print(json.dumps(asyncio.run(list_offsets_demo(args.keep)), indent=1, default=str))
        return
    result = asyncio.run(run(args.variant, args.messages, args.rate, args.rounds, args.down, args.keep, args.burst,
                            not args.no_ensure_topics, args.producers))
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
