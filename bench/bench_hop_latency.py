"""How long one event takes through one broker hop on the local broker (tansu on SeaweedFS, as the
stack runs it), and what its fetch waiting costs while nothing happens.

For each fetch wait given, a consumer (the services' settings: fetch min bytes 1) waits on a fresh
topic while a producer (`kafka.make_producer`, the relay's) sends EVENTS events one at a time at
random gaps (a lone event, as the last vote or a release request is). Per event: send -> ack (the
produce: the broker's S3 writes) and ack -> the consumer's getmany returning it (the fetch
wake-up). Then IDLE seconds with the consumer connected and nothing sent: the broker's and its
store's CPU per second (from /proc), which is what a consumer's waiting fetches cost.

Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_hop_latency.py [--waits 500,100] [--events 60] [--idle 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from bench.bench_broker_storage import Engine, load
from services.common.kafka import ensure_topics, make_producer


def _own_cpu_s() -> float:
    """This process's CPU (the producer's and the consumer's Python side)."""
    t = os.times()
    return t.user + t.system


def _ms(values: list[float]) -> str:
    values = sorted(values)
    q = statistics.quantiles(values, n=10) if len(values) > 2 else values
    return f"median {statistics.median(values) * 1000:5.0f}  p90 {q[-1] * 1000:5.0f}  max {values[-1] * 1000:5.0f} ms"


async def one_wait(bootstrap: str, wait_ms: int, events: int, idle_s: float, engine: Engine,
                   seed: int) -> str:
    topic = f"hop-{wait_ms}-{time.time_ns()}"
    await ensure_topics(bootstrap, (topic,), partitions=1)
    producer = make_producer(bootstrap)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"{topic}-g",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_min_bytes=1, fetch_max_wait_ms=wait_ms)
    await producer.start()
    await consumer.start()
    received: dict[bytes, float] = {}

    async def consume() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                now = time.perf_counter()
                for r in records:
                    received[r.key] = now
                await consumer.commit()

    reader = asyncio.create_task(consume())
    try:
        await producer.send_and_wait(topic, key=b"warm", value=b"x")
        while b"warm" not in received:
            await asyncio.sleep(0.01)
        rng = random.Random(seed)
        produce, fetch = [], []
        for i in range(events):
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            key = f"e{i}".encode()
            sent = time.perf_counter()
            await producer.send_and_wait(topic, key=key, value=b"x" * 400)
            acked = time.perf_counter()
            while key not in received:
                await asyncio.sleep(0.001)
            produce.append(acked - sent)
            fetch.append(received[key] - acked)
        await asyncio.sleep(2)
        before, own, started = engine.cpu_s(), _own_cpu_s(), time.perf_counter()
        await asyncio.sleep(idle_s)
        seconds = time.perf_counter() - started
        idle, client = (engine.cpu_s() - before) * 1000 / seconds, (_own_cpu_s() - own) * 1000 / seconds
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
    return (f"fetch wait {wait_ms:4d} ms: send->ack {_ms(produce)}; ack->consumed {_ms(fetch)}; "
            f"idle, the consumer waiting: broker+S3 {idle:5.1f}, client {client:4.1f} ms CPU/s  [{load()}]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waits", default="500,100")
    parser.add_argument("--events", type=int, default=60)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-hop-"))
    engine = Engine("s3", home)
    try:
        bootstrap = engine.start()
        print(f"tansu on SeaweedFS at {bootstrap}  [{load()}]", flush=True)
        for r in range(args.repeat):
            for wait in (int(w) for w in args.waits.split(",")):
                print(asyncio.run(one_wait(bootstrap, wait, args.events, args.idle, engine, seed=r)), flush=True)
    finally:
        engine.stop()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
