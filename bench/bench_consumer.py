"""CPU per consumed event in the one consumer base (services/common/consumer.py): this process's
CPU (the consumer: aiokafka, the handler, psycopg) and Postgres's CPU per event, against the real
broker and Postgres of a local stack.

Each round: a fresh schema (the common inbox/outbox) and a fresh one-partition topic; N
report-ingested events are produced (by a separate process, so its CPU is not counted here) either
all before the consumer starts (`backlog`: batches of up to 500 records) or at a steady rate while
it runs (`paced`: small batches, as in the running funnel). The handler resembles the services':
one upsert of the event's study and one event emitted to the outbox. A round ends when every
event has its inbox row.

Run it on this branch and on main back to back (the same script, PYTHONPATH pointing at each
tree, from that tree) and compare within a pair; the load average is printed next to every figure.
Knobs: RADCURATE_BENCH_EVENTS (default 5000), RADCURATE_BENCH_ROUNDS (3), RADCURATE_BENCH_MODE
(backlog,paced), RADCURATE_BENCH_RATE (paced: events/s, default 500), RADCURATE_BENCH_STATE (the
state dir of a stack already up; otherwise one is started in a temporary dir and stopped after).
Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_consumer.py
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from radcurate.cpu_clock import stack_cpu
from radcurate.stack import local
from radcurate.stack.postgres import DATABASE, with_database
from services.common import consumer as consumer_module
from services.common import outbox
from services.common.consumer import EventConsumer, Handler
from services.common.contracts import ObjectsManifest, Protocol, ReportIngested
from services.common.db import COMMON_MIGRATIONS, apply_migrations, open_pool
from services.common.kafka import ensure_topics, make_producer


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"[load {one:.2f}/{five:.2f}]"


def report(study_id: str) -> ReportIngested:
    return ReportIngested(study_id=study_id, patient_id=f"P-{study_id}", study_instance_uid=f"1.2.3.{study_id[1:]}",
                          protocol=Protocol.CXR, report_text="No acute cardiopulmonary process. " * 10,
                          objects_manifest=ObjectsManifest())


def produce(bootstrap: str, topic: str, n: int, rate: float) -> None:
    """Produce n events (rate 0: as fast as possible); runs in its own process."""
    async def go() -> None:
        producer = make_producer(bootstrap)
        await producer.start()
        try:
            started = time.perf_counter()
            for i in range(n):
                event = report(f"S{i:07d}")
                await producer.send(topic, key=event.study_id.encode(), value=event.model_dump_json().encode())
                if rate and i % 10 == 9:
                    ahead = (i + 1) / rate - (time.perf_counter() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            await producer.flush()
        finally:
            await producer.stop()
    asyncio.run(go())


def fresh_schema(admin_dsn: str) -> str:
    schema = f"b_{uuid.uuid4().hex[:10]}"
    info = psycopg.conninfo.conninfo_to_dict(with_database(admin_dsn, DATABASE))
    info["options"] = f"-c search_path={schema}"
    dsn = psycopg.conninfo.make_conninfo(**info)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute("CREATE TABLE studies (study_id text PRIMARY KEY, report_text text NOT NULL)")
    apply_migrations(dsn, sorted(Path(COMMON_MIGRATIONS).glob("*.sql")))
    return dsn


async def on_report(conn: psycopg.AsyncConnection, event: ReportIngested, _: Any) -> list[ReportIngested]:
    await conn.execute("INSERT INTO studies VALUES (%s, %s) ON CONFLICT (study_id) DO NOTHING",
                       (event.study_id, event.report_text))
    return [report(f"N{event.study_id[1:]}")]


async def one_round(state: dict, mode: str, n: int, rate: float) -> dict[str, float]:
    bootstrap = state["kafka"]["bootstrap"]
    topic = f"bench-consumer-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, (topic, f"{topic}.dlq"), partitions=1)
    dsn = fresh_schema(state["postgres"]["admin_dsn"])
    ctx = multiprocessing.get_context("spawn")
    producer = ctx.Process(target=produce, args=(bootstrap, topic, n, rate if mode == "paced" else 0))
    producer.start()
    if mode == "backlog":
        producer.join()
    pool = await open_pool(dsn)
    relay_producer = make_producer(bootstrap)
    await relay_producer.start()
    relay = outbox.OutboxRelay(pool, relay_producer, "bench")  # never run: the outbox is not measured
    consumer = EventConsumer(service=f"bench-{topic}", pool=pool, bootstrap=bootstrap,
                             handlers={topic: Handler(apply=on_report)}, relay=relay,
                             session_timeout_ms=10_000, heartbeat_interval_ms=1_000)
    await consumer.start()
    cpu_before, wall_before = stack_cpu(state), time.perf_counter()
    task = asyncio.create_task(consumer.run())
    try:
        while True:
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT count(*) AS n FROM inbox")
                row = await cur.fetchone()
                await conn.commit()
            if row and row["n"] >= n:
                break
            await asyncio.sleep(0.1)
    finally:
        wall = time.perf_counter() - wall_before
        cpu_after = stack_cpu(state)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()
        await relay_producer.stop()
        await pool.close()
        producer.join()
    spent = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in ("client", "postgres", "kafka")}
    return {"wall": wall, **spent}


async def main() -> int:
    n = int(os.environ.get("RADCURATE_BENCH_EVENTS", "5000"))
    rounds = int(os.environ.get("RADCURATE_BENCH_ROUNDS", "3"))
    modes = os.environ.get("RADCURATE_BENCH_MODE", "backlog,paced").split(",")
    rate = float(os.environ.get("RADCURATE_BENCH_RATE", "500"))
    given = os.environ.get("RADCURATE_BENCH_STATE")
    tmp = None if given else tempfile.mkdtemp(prefix="bench-consumer-")
    state_dir = Path(given or tmp or "")
    # `up` runs its own event loop (topic creation), so it goes to a thread from inside this one.
    state = local.load(state_dir) if given else await asyncio.to_thread(local.up, state_dir, services_to_run=())
    print(f"consumer code: {consumer_module.__file__}; {n} events per round, pid {os.getpid()}", flush=True)
    try:
        for mode in modes:
            for r in range(rounds):
                fig = await one_round(state, mode, n, rate)
                print(f"{mode:<8} round {r + 1}: consumer {fig['client'] / n * 1000:.3f} ms CPU/event,"
                      f" postgres {fig['postgres'] / n * 1000:.3f}, broker {fig['kafka'] / n * 1000:.3f},"
                      f" wall {fig['wall']:.1f} s {load()}", flush=True)
    finally:
        if tmp:
            local.down(state_dir, wipe=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
