"""The funnel's ingest → labels-suggested time against its reference floor, measured in the same run.

On one fresh local stack (SeaweedFS + tansu + Postgres + the five services, as `radcurate demo`):
1. floor, S3: the same number of objects (the study files themselves) PUT to the same S3 server
   by a bare minio client at the ingest's concurrency;
2. floor, broker: the same number of events (the size of a report-ingested event) pushed through
   four hops of a bare aiokafka producer → consumer chain on the same broker (topics with the
   stack's partition count, every hop consuming and re-producing, all hops running together);
3. the funnel: ingest (the demo's own `ingest_folder`) until the gateway counts every study as
   labels-suggested, with the CPU seconds each process spent.

Floor = (1) + (2), taken one after the other: what the bare store and the bare broker cost for
this volume. Both are taken twice: before the funnel on the bare stack, and after it on the same
stack (the store and the broker holding the funnel's data, the services up and idle); the ratio is
the funnel's time to the mean of the two, each alone printed beside it. One floor taken once moved
with the machine (15.7 s and 18.0 s in two sessions' quiet runs: the ratio 1.88 against 2.31), and
it is taken a minute before the funnel it is compared with; two readings around the funnel show
how far it moves within one run, and their mean sits nearer the funnel's own conditions. Never the
best of several: a floor read low flatters nothing but the ratio's target.
(RADCURATE_BENCH_FLOOR_AFTER=0: before only, as up to session 8.) Beside it the same ratio in
CPU seconds (the funnel's processes against the S3 server's, the broker's and the bench clients'
in the floor), which a loaded machine moves far less than wall time.
Session 9, 13,735 studies, six runs (three of this code, three of 7f57870), floor before / after:
16.3 / 35.1 s (load 2 then 6), 21.5 / 20.1 (load 3), 32.8 / 21.5 and 35.5 / 18.9 (load 3-5),
95.2 / 144.5 and 116.4 / 71.7 s (load 10-20): the S3 part follows the load (13.5 s at load 2,
32.1 s at load 4.5 for the same PUTs), so after / before ran 0.53-2.16 within one run; the
floor's CPU moved far less (30.7 / 39.3, 32.7 / 33.6, 35.7 / 35.7, 40.7 / 35.5 s at load 2-6;
the S3 server 1.3-2.3 ms per PUT). A wall ratio is only as quiet as the machine it was taken on.
Goal: funnel ≤ 2 × floor (issue 15 §2); stretch: ingest → labels ≤ 30 s at 13,735.

Scale (issue 15 §6): RADCURATE_BENCH_SCALES="1,3,10" runs the funnel (step 3 only) at each
multiple of the pool, each on a fresh stack, and prints the time and CPU per study against the
1× figure (target ≤ 1.1×), with the disk the data set and the stack's state took. Default "1"
(the floor and the paper's pool: ~3–4 min on an idle 2-core machine). With the demo's 256 px
images (~130 KB per study) 3× and 10× need 5 / 18 GB of data plus as much again in the S3
server: more than this machine has free at 10×. The lighter path, RADCURATE_BENCH_IMAGE=64:
every scale's pool is the same synthetic cohort with its chests averaged down to 64 × 64 px
(~9.6 KB files, 12 KiB on disk; reports, UIDs and events as at full size; ~0.9 ms of CPU per
study to make), synthesised for the run under data/bench-<N>-64px-0 and deleted after it
(RADCURATE_BENCH_KEEP_DATA=1 keeps it). The 1× and 10× figures compared must both come from it:
fewer bytes cost the S3 server, the gateway and the client a little less per study (two pairs at
1×, load 8–11: 5.4 and 6.2 ms of CPU per study at 64 px against 7.7 and 6.4 at 256 px; the S3
server 1.8 / 2.1 against 3.0 / 2.4), so compare light with light only.
Measured in session 7 at 1× / 3×: data 0.17 / 0.50 GiB, stack state 0.60 / 1.69 GiB (Postgres
0.40 / 1.08, S3 0.20 / 0.61), so 10× needs ~1.7 GiB of data plus ~5.7 GiB of state (~7.5 GiB;
keep 10 GiB free); each scale's pool and stack are gone before the next starts. On an idle
2-core machine 10× takes ~15 min (synthesis ~2, funnel ~10 at last session's 3.9 ms per study),
the series ~22 min:
  RADCURATE_BENCH_IMAGE=64 RADCURATE_BENCH_SCALES=1,3,10 RADCURATE_BENCH_FLOOR=0 \
    PYTHONPATH=$PWD timeout 3600 .venv/bin/python bench/bench_floor.py
What grew with the data (session 11): tansu's fetch LISTs a partition's whole log (one S3 object
per produced batch) before reading it, so the broker's and the S3 server's CPU per event rose with
every event the stack had carried (bench_broker_storage.py --held). The stack now deletes the
batches every consumer group has read (radcurate/stack/logtrim.py; RADCURATE_LOG_TRIM=0 keeps
them, as before). Light path, base 2,000, 1× and 10× in alternating series at load 9-15, trim off /
on / on / off: at 20,000 studies broker 0.63 / 0.35 / 0.43 / 0.77 ms of CPU per study, S3 server
2.19 / 1.68 / 1.80 / 2.45, all processes 6.13 / 5.11 / 5.50 / 6.81; at 2,000 no difference above
the noise (5.21-6.61 ms either way).
The stack's idle CPU rate (RADCURATE_BENCH_IDLE_S, default 10 s, measured before each funnel)
is printed too, and CPU per study net of it: a longer run pays more of the S3 server's and the
broker's by-the-second cost per study, which a production MinIO/Kafka would not scale the same way.
Where the growth goes (Postgres statements, tables, the S3 server's requests by action): the
same funnel at one scale with those counters saved, and a per-study comparison of two scales:
bench/scale_stats.py (session 8: the metrics loop's outbox scans, now indexed).
A smaller base with full-size images (RADCURATE_BENCH_STUDIES=1000) takes the first N studies
of an already synthesised paper-scale pool, so 1k / 3k / 10k need no new data.

Knobs: RADCURATE_BENCH_STUDIES (default 13735), RADCURATE_BENCH_SCALES (default "1"),
RADCURATE_BENCH_IMAGE (pixels across, a divisor of 256; default 256), RADCURATE_BENCH_KEEP_DATA,
RADCURATE_BENCH_FLOOR=0 to skip the floor, RADCURATE_BENCH_FLOOR_AFTER=0 to take it before the funnel
only, RADCURATE_BENCH_S3_REQUESTS=1 to count the S3 requests
per study by bucket (the broker's log against the services' objects). Every figure is printed with os.getloadavg().
Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_floor.py
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from minio import Minio

from radcurate import demo
from radcurate.bulk_ingest import read_reports, study_paths
from radcurate.client import Gateway
from radcurate.cpu_clock import CLIENT, stack_cpu
from radcurate.cpu_clock import process_cpu as cpu_seconds
from radcurate.stack import local, seaweed
from radcurate.stack.procs import free_port
from radcurate.synth.cxr import synth_cxr
from radcurate.synth.image import SIZE
from services.common.contracts import Protocol
from services.common.kafka import ensure_topics

TARGET_RATIO = 2.0  # funnel / floor
TARGET_STRETCH_S = 30.0  # 13,735 studies ingest → labels
TARGET_SCALE = 1.1  # time per study at k× / at 1×
HOPS = 4
EVENT_BYTES = 1500  # a report-ingested event of the synthetic pool (report ~600 chars + one object)
INGEST_CONCURRENCY = 8  # the gateway's BATCH_CONCURRENCY: a batch's studies stored 8 at a time
IDLE_S = float(os.environ.get("RADCURATE_BENCH_IDLE_S", "10"))  # the stack's idle CPU rate, measured before the funnel
# RADCURATE_BENCH_S3_REQUESTS=1: start SeaweedFS with its metrics port and print the S3 requests
# per study over the funnel by bucket and action (the broker's own log is the bucket "tansu").
# Off by default so that a pair against main's code measures the same server settings.
# Session 8, 2,000 studies, load 6-16: objects 1.00 PUT per study; the broker's log 0.38-0.65
# requests per study (PUT 0.23-0.37, GET 0.09-0.15, LIST 0.06-0.12: a relay round per ingest
# batch, then a fetch, batch and offset commit per consumer), 0.43 with 64-study ingest batches.
S3_REQUESTS = os.environ.get("RADCURATE_BENCH_S3_REQUESTS", "0") == "1"
# The floor is measured again after the funnel (RADCURATE_BENCH_FLOOR_AFTER=0: before only, as up
# to session 8), and the ratio taken to the mean of the two (print_ratio).
FLOOR_AFTER = os.environ.get("RADCURATE_BENCH_FLOOR_AFTER", "1") != "0"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"[load {one:.2f}/{five:.2f}]"


def floor_s3(state: dict, data_dir: Path, rows: list[dict], prefix: str = "floor") -> float:
    """PUT every study file to the stack's S3 server (bucket bench-floor, new keys under
    `prefix`); seconds."""
    s3 = state["s3"]
    client = Minio(s3["endpoint"], access_key=s3["access_key"], secret_key=s3["secret_key"], secure=False,
                   region="us-east-1")
    bucket = "bench-floor"
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    paths = [p for row in rows for _, p in study_paths(data_dir, row["study_id"])]

    def put(path: Path) -> None:
        with open(path, "rb") as fp:
            client.put_object(bucket, f"{prefix}/{path.name}", fp, path.stat().st_size,
                              content_type="application/dicom")

    started = time.perf_counter()
    with ThreadPoolExecutor(INGEST_CONCURRENCY) as pool:
        list(pool.map(put, paths))
    return time.perf_counter() - started


async def floor_broker(bootstrap: str, events: int, partitions: int, run: str | None = None) -> float:
    """`events` messages through HOPS producer → consumer hops, all hops concurrent; seconds from
    the first send to the last message read at the end of the chain. The hops' topics are
    `<run>-<hop>` (a new run name unless given), each read by the group `<topic>-g` from its commit."""
    run = run or f"floor-{time.time_ns()}"
    topics = tuple(f"{run}-{i}" for i in range(HOPS))
    await ensure_topics(bootstrap, topics, partitions=partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    consumers = [AIOKafkaConsumer(t, bootstrap_servers=bootstrap, group_id=f"{t}-g", auto_offset_reset="earliest",
                                  enable_auto_commit=False, max_poll_records=500, fetch_max_wait_ms=100)
                 for t in topics]
    for c in consumers:
        await c.start()
    payload = b"x" * EVENT_BYTES

    async def relay(hop: int) -> None:
        """Read hop's topic, send each message on to the next topic (the last hop only counts),
        committing offsets after the sends are acknowledged, as a service would."""
        consumer, seen = consumers[hop], 0
        while seen < events:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            acks = []
            for records in batches.values():
                for r in records:
                    seen += 1
                    if hop + 1 < HOPS:
                        acks.append(await producer.send(topics[hop + 1], key=r.key, value=r.value))
            if acks:
                await asyncio.gather(*acks)
            if batches:
                await consumer.commit()

    try:
        started = time.perf_counter()
        hops = [asyncio.create_task(relay(h)) for h in range(HOPS)]
        acks = [await producer.send(topics[0], key=f"S{i:07d}".encode(), value=payload) for i in range(events)]
        await asyncio.gather(*acks)
        await asyncio.gather(*hops)
        return time.perf_counter() - started
    finally:
        for c in consumers:
            await c.stop()
        await producer.stop()


async def funnel(state: dict, data_dir: Path, studies: int) -> dict[str, float]:
    """The demo's ingest, then wait until the gateway counts every study labels-suggested."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    summary = await demo.ingest_folder(state, data_dir)
    timings["ingest"] = time.perf_counter() - started
    if summary.ingested != studies:
        raise SystemExit(f"ingested {summary.ingested} of {studies}: {summary.rejected[:3]}")
    api = Gateway(state["gateway_url"], state["admin_token"])
    try:
        await demo.wait_for_funnel(api, Protocol.CXR, "suggested", studies, "extract + map", "studies")
    finally:
        await api.aclose()
    timings["ingest → labels"] = time.perf_counter() - started
    timings["labels after ingest"] = timings["ingest → labels"] - timings["ingest"]
    return timings


def s3_requests(state: dict) -> dict[tuple[str, str], float]:
    """SeaweedFS's S3 request counters (`SeaweedFS_s3_request_total`), summed by (bucket, action);
    empty when the stack runs without its metrics port."""
    port = os.environ.get(seaweed.METRICS_PORT)
    if not port or not state.get("s3"):
        return {}
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("SeaweedFS_s3_request_total{"):
            labels = dict(pair.split("=", 1) for pair in line[line.index("{") + 1:line.index("}")].split(","))
            key = (labels.get("bucket", '"?"').strip('"'), labels.get("type", '"?"').strip('"'))
            counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def print_s3_requests(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], studies: int,
                      unit: str = "study") -> None:
    """The S3 requests each bucket took per study (or per `unit`) between two counts (bench's caller
    attribution: the bucket "tansu" is the broker's log, the others the services' objects)."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v > before.get(k, 0.0)}
    buckets = sorted({b for b, _ in delta}, key=lambda b: -sum(v for (bb, _), v in delta.items() if bb == b))
    for bucket in buckets:
        parts = sorted(((t, v) for (b, t), v in delta.items() if b == bucket), key=lambda tv: -tv[1])
        print(f"  S3 requests per {unit}, bucket {bucket or '(none)'}: {sum(v for _, v in parts) / studies:.2f} ("
              + ", ".join(f"{t} {v / studies:.2f}" for t, v in parts) + f") {load()}", flush=True)


def disk_bytes(path: Path) -> int:
    """Bytes `path` takes on disk (allocated blocks, as du counts them; links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:  # a log rotated or a temp file gone while we walk
                pass
    return total


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def light_pool_dir(studies: int, image_size: int) -> Path:
    return Path("data") / f"bench-{studies}-{image_size}px-0"


def light_pool(studies: int, image_size: int) -> Path:
    """The lighter path's pool: `studies` of the synthetic cohort with `image_size` px chests,
    synthesised unless an identical one is already there."""
    data_dir = light_pool_dir(studies, image_size)
    marker, wanted = data_dir / "synth.json", {"studies": studies, "seed": 0, "image_size": image_size}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return data_dir
    shutil.rmtree(data_dir, ignore_errors=True)
    started, cpu = time.perf_counter(), time.process_time()
    synth_cxr(studies, 0, data_dir, image_size=image_size)
    marker.write_text(json.dumps(wanted))
    print(f"synthesised {studies:,} studies at {image_size} px in {time.perf_counter() - started:.1f}s "
          f"(this process {time.process_time() - cpu:.1f} s CPU, workers besides): "
          f"{gib(disk_bytes(data_dir))} on disk {load()}", flush=True)
    return data_dir


def pool_of(studies: int, image_size: int = SIZE) -> Path:
    """The synthetic pool: at a smaller image size the lighter path's own pool; else the first
    `studies` of the paper-scale pool when that is already synthesised (a reports.csv cut short,
    the same DICOM folder), else a fresh one."""
    if image_size != SIZE:
        return light_pool(studies, image_size)
    paper = Path("data") / "demo-13735-0"
    if studies < 13_735 and (paper / "synth.json").exists():
        subset = Path("data") / f"bench-first-{studies}-of-13735"
        if not (subset / "reports.csv").exists():
            subset.mkdir(parents=True, exist_ok=True)
            rows = read_reports(paper)[:studies]
            with open(subset / "reports.csv", "w", newline="") as dst:
                writer = csv.DictWriter(dst, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            (subset / "dicom").symlink_to((paper / "dicom").resolve())
        return subset
    data_dir = Path("data") / f"demo-{studies}-0"
    demo.synth_data(studies, 0, data_dir)
    return data_dir


def idle_rates(state: dict, seconds: float) -> dict[str, float]:
    """CPU seconds per second each stack process spends with nothing to do (the client left
    out: it is this process, asleep), over `seconds` right after the stack is up."""
    if seconds <= 0:
        return {}
    before, started = stack_cpu(state), time.perf_counter()
    time.sleep(seconds)
    after, wall = stack_cpu(state), time.perf_counter() - started
    return {k: max(0.0, v - before.get(k, 0.0)) / wall for k, v in after.items() if k != CLIENT}


def measure_floor(state: dict, data_dir: Path, rows: list[dict], when: str) -> tuple[float, float, float]:
    """The floor's two parts on the running stack, printed: (S3 PUT seconds, broker seconds, CPU
    seconds the S3 server, the broker and this process spent on both). `when` names the
    measurement ("before" or "after" the funnel) and keeps its objects and topics apart."""
    floor_parts = ("s3", "kafka", CLIENT)  # what the floor exercises (Postgres and the services idle)
    cpu_before = stack_cpu(state)
    s3_pid, n = state["s3"]["pid"], len(rows)
    s3_cpu = cpu_seconds(s3_pid)
    puts = floor_s3(state, data_dir, rows, prefix=f"floor-{when}")
    put_ms, s3_cpu = 1000 * (cpu_seconds(s3_pid) - s3_cpu) / n, cpu_seconds(s3_pid)
    print(f"floor {when} the funnel, S3: {n:,} PUTs in {puts:.1f}s ({n / puts:.0f}/s at concurrency "
          f"{INGEST_CONCURRENCY}; S3 server {put_ms:.2f} ms CPU per PUT) {load()}", flush=True)
    broker_cpu = cpu_seconds(state["kafka"]["pid"])
    broker = asyncio.run(floor_broker(state["kafka"]["bootstrap"], n, local.StackSettings().topic_partitions))
    print(f"floor {when} the funnel, broker: {n:,} events through {HOPS} hops in {broker:.1f}s (broker "
          f"{1000 * (cpu_seconds(state['kafka']['pid']) - broker_cpu) / n:.2f} + its S3 log "
          f"{1000 * (cpu_seconds(s3_pid) - s3_cpu) / n:.2f} ms CPU per event) {load()}", flush=True)
    cpu_after = stack_cpu(state)
    return puts, broker, sum(cpu_after[k] - cpu_before.get(k, 0.0) for k in floor_parts if k in cpu_after)


def run_one(studies: int, with_floor: bool, image_size: int = SIZE) -> dict[str, float]:
    data_dir = pool_of(studies, image_size)
    linked = data_dir / "dicom"  # a first-N subset links the paper pool's whole DICOM folder
    figures: dict[str, float] = {"data set bytes": disk_bytes(data_dir) + (disk_bytes(linked) if linked.is_symlink()
                                                                              else 0)}
    rows = read_reports(data_dir)
    Path(".radcurate").mkdir(exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="bench-floor-", dir=".radcurate"))  # inside the checkout, ignored
    if S3_REQUESTS:
        os.environ.setdefault(seaweed.METRICS_PORT, str(free_port()))
    try:
        state = local.up(home / "stack", services_to_run=())
        if with_floor:
            figures["floor: S3 PUTs"], figures["floor: broker"], figures["floor: cpu s"] = measure_floor(
                state, data_dir, rows, "before")
        state = local.up(home / "stack")
        idle = idle_rates(state, IDLE_S)
        before, requests_before = stack_cpu(state), s3_requests(state)
        figures |= asyncio.run(funnel(state, data_dir, studies))
        after, requests_after = stack_cpu(state), s3_requests(state)
        cpu = {k: after[k] - before.get(k, 0.0) for k in after}
        figures["cpu s, all processes"] = sum(cpu.values())
        # The S3 server and the broker burn CPU by the second even when idle (polls, timers): a run
        # that takes longer (a larger scale, or a loaded machine) pays more of it per study. Net of
        # that rate the figure is the work the studies themselves cost.
        wall = figures["ingest → labels"]
        figures["cpu s, net of idle"] = sum(max(0.0, v - idle.get(k, 0.0) * wall) for k, v in cpu.items())
        print(f"funnel, {studies:,} studies: ingest {figures['ingest']:.1f}s,"
              f" labels {figures['labels after ingest']:.1f}s after it;"
              f" ingest → labels {figures['ingest → labels']:.1f}s {load()}", flush=True)
        print("  CPU s by process over ingest → labels: " + ", ".join(
            f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])) +
            f"; total {figures['cpu s, all processes']:.1f} = {1000 * figures['cpu s, all processes'] / studies:.1f}"
            " ms per study", flush=True)
        if idle:
            print(f"  idle before it ({IDLE_S:.0f}s): {1000 * sum(idle.values()):.0f} ms/s in all (" + ", ".join(
                f"{k} {1000 * v:.0f}" for k, v in sorted(idle.items(), key=lambda kv: -kv[1]) if v >= 0.0005)
                + f"); net of that rate {1000 * figures['cpu s, net of idle'] / studies:.2f} ms per study {load()}",
                flush=True)
        print_s3_requests(requests_before, requests_after, studies)
        if with_floor and FLOOR_AFTER:
            figures["floor after: S3 PUTs"], figures["floor after: broker"], figures["floor after: cpu s"] = \
                measure_floor(state, data_dir, rows, "after")
        # What a larger run needs free: the stack's state (S3 objects and the broker's log in it,
        # Postgres, logs) grows with the studies; the data set is on top of it.
        parts = {p.name: disk_bytes(p) for p in sorted((home / "stack").iterdir()) if p.is_dir()}
        figures["stack state bytes"] = sum(parts.values())
        print(f"  disk: data set {gib(int(figures['data set bytes']))}, stack state "
              f"{gib(int(figures['stack state bytes']))} (" + ", ".join(f"{k} {gib(v)}" for k, v in parts.items())
              + f"); {(figures['data set bytes'] + figures['stack state bytes']) / studies / 1024:.1f} KiB per study"
              f" {load()}", flush=True)
    finally:
        local.down(home / "stack")
        shutil.rmtree(home, ignore_errors=True)
    return figures


def print_ratio(figures: dict[str, float]) -> None:
    """The funnel against its floor: measured before the funnel (a bare stack) and, unless
    RADCURATE_BENCH_FLOOR_AFTER=0, after it (the same stack holding the funnel's data, its
    services idle); the ratio is to their mean, with each alone beside it."""
    funnel_s = figures["ingest → labels"]
    before = figures["floor: S3 PUTs"] + figures["floor: broker"]
    print(f"floor before the funnel {before:.1f}s (S3 {figures['floor: S3 PUTs']:.1f} + broker "
          f"{figures['floor: broker']:.1f}): ratio {funnel_s / before:.2f} {load()}")
    if "floor after: S3 PUTs" not in figures:
        print(f"ingest → labels {funnel_s:.1f}s vs floor {before:.1f}s: ratio {funnel_s / before:.2f} "
              f"(target ≤ {TARGET_RATIO:.1f}); in CPU {figures['cpu s, all processes']:.1f}s vs "
              f"{figures['floor: cpu s']:.1f}s: {figures['cpu s, all processes'] / figures['floor: cpu s']:.2f} "
              f"{load()}")
        return
    after = figures["floor after: S3 PUTs"] + figures["floor after: broker"]
    mean = (before + after) / 2
    print(f"floor after the funnel {after:.1f}s (S3 {figures['floor after: S3 PUTs']:.1f} + broker "
          f"{figures['floor after: broker']:.1f}): ratio {funnel_s / after:.2f}; after / before "
          f"{after / before:.2f} {load()}")
    print(f"ingest → labels {funnel_s:.1f}s vs floor {mean:.1f}s (the mean of before and after): ratio "
          f"{funnel_s / mean:.2f} (target ≤ {TARGET_RATIO:.1f}) {load()}")
    # The same comparison in CPU, which a loaded machine moves far less than wall time: all the
    # funnel's processes against the S3 server, the broker and the bench's own clients in the floor.
    cpu = figures["cpu s, all processes"]
    print(f"  in CPU: funnel {cpu:.1f}s vs floor {figures['floor: cpu s']:.1f}s before / "
          f"{figures['floor after: cpu s']:.1f}s after: ratio {cpu / figures['floor: cpu s']:.2f} / "
          f"{cpu / figures['floor after: cpu s']:.2f}, to their mean "
          f"{2 * cpu / (figures['floor: cpu s'] + figures['floor after: cpu s']):.2f} {load()}")


def main() -> int:
    # A timeout's SIGTERM unwinds through the `finally`s, so the stack it started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    studies = int(os.environ.get("RADCURATE_BENCH_STUDIES", "13735"))
    scales = [int(s) for s in os.environ.get("RADCURATE_BENCH_SCALES", "1").split(",") if s.strip()]
    with_floor = os.environ.get("RADCURATE_BENCH_FLOOR", "1") != "0"
    image_size = int(os.environ.get("RADCURATE_BENCH_IMAGE", str(SIZE)))
    keep_data = os.environ.get("RADCURATE_BENCH_KEEP_DATA", "0") == "1"
    per_study: dict[int, tuple[float, float, float]] = {}
    for k in scales:
        n, started = studies * k, time.perf_counter()
        try:
            figures = run_one(n, with_floor and k == scales[0], image_size)
        finally:
            if image_size != SIZE and not keep_data:  # the lighter pool is the run's own: leave no GBs behind
                shutil.rmtree(light_pool_dir(n, image_size), ignore_errors=True)
        print(f"scale {k}×: {time.perf_counter() - started:.0f}s in all (synthesis, stack, funnel, stop) {load()}",
              flush=True)
        per_study[k] = (1000 * figures["ingest → labels"] / n, 1000 * figures["cpu s, all processes"] / n,
                        1000 * figures["cpu s, net of idle"] / n)
        if "floor: S3 PUTs" in figures:
            print_ratio(figures)
        if n == 13_735:
            print(f"stretch: ingest → labels {figures['ingest → labels']:.1f}s (target ≤ {TARGET_STRETCH_S:.0f}s, "
                  f"ratio {figures['ingest → labels'] / TARGET_STRETCH_S:.2f})")
    base = per_study.get(1) or next(iter(per_study.values()))
    for k, (ms, cpu_ms, net_ms) in per_study.items():
        print(f"scale {k}× ({studies * k:,} studies{'' if image_size == SIZE else f', {image_size} px images'}): "
              f"{ms:.2f} ms per study wall, {cpu_ms:.2f} ms CPU per study; "
              f"ratio to 1× {ms / base[0]:.2f} wall, {cpu_ms / base[1]:.2f} CPU (target ≤ {TARGET_SCALE}); "
              f"net of idle {net_ms:.2f} ms, ratio {net_ms / base[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
