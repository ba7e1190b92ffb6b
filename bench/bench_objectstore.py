"""The local S3 server on the figures that decide whether it can hold a real campaign.

- server CPU per 128 KB PUT and GET (and per 20 MB PUT): its own /proc CPU time over the requests;
- RSS after ~1 GB written (and the peak): memory must not grow with stored bytes;
- idle CPU after a restart on the same data (SeaweedFS 4.48's `weed mini` busy-polls here);
- acknowledged messages lost when 4 producers write one partition of the tansu broker whose log
  is in this server (tansu claims offsets with `If-Match` PUTs: a server that ignores it loses
  acknowledged messages).

Targets: 0 messages lost; RSS after 1 GB <= 512 MiB; idle <= 10 ms of CPU per s (1% of a core);
PUT/GET CPU at most moto's (the server this one replaced: 4.6 / 3.6 ms).

`--small N` also measures N PUTs and GETs of the small objects most requests carry (400 B: a
manifest, tansu's watermark; 4 KB: a broker batch), with the bytes each PUT added to the volume
files: 0 would mean the object was kept in the filer store instead of a round trip to the volume
server. `--weed-flag` (repeatable) starts SeaweedFS with an extra flag, to compare in pairs, e.g.
`--gb 0 --messages 0 --small 2000 --weed-flag=-filer.saveToFilerLimit=65536`.
`--profile N` instead runs N small PUTs and GETs under SeaweedFS's own CPU profiler and prints the
functions its CPU went to (bench/go_pprof.py reads the profile: the binary is stripped, so `perf`
cannot name them).
Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_objectstore.py [--server seaweedfs|moto] [--gb 1.0]
     [--messages 10000] [--small 0] [--weed-flag=...] [--profile 0]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import secrets
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from minio import Minio

from bench import go_pprof
from radcurate.stack import infra, seaweed
from radcurate.stack.procs import free_port, http_ok, process, spawn, stop, wait_until

KB = 1024
TARGETS = {"put_ms": 4.6, "get_ms": 3.6, "rss_mib": 512.0, "idle_ms_per_s": 10.0, "lost": 0}
BUCKETS = ["bench", infra.TANSU_BUCKET]


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / 100  # utime + stime, in clock ticks of 10 ms


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """One S3 server under test: started, restarted on the same data, stopped."""

    def __init__(self, kind: str, home: Path) -> None:
        self.kind, self.home, self.info = kind, home, None

    def start(self) -> dict:
        log = self.home / "logs" / "s3.log"
        if self.kind == "seaweedfs":
            self.info = infra.start_s3(self.home / "s3", log, "bench", self.info["secret_key"] if self.info
                                       else secrets.token_urlsafe(16), BUCKETS, self.info)
        else:  # moto, for reference: in memory, so a restart starts empty
            port = free_port()
            exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
            pid = spawn([exe, "-H", "127.0.0.1", "-p", str(port)], log)
            wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/moto-api/"), "moto", 30, pid, log)
            self.info = {**process(pid), "endpoint": f"127.0.0.1:{port}", "access_key": "bench", "secret_key": "bench"}
            infra.make_buckets(self.info["endpoint"], "bench", "bench", BUCKETS)
        return self.info

    def stop(self) -> None:
        stop(self.info, timeout=3)

    def client(self) -> Minio:
        return Minio(self.info["endpoint"], access_key=self.info["access_key"], secret_key=self.info["secret_key"],
                     secure=False, region="us-east-1")


def put_get_cpu(server: Server, size: int, count: int, threads: int = 4) -> tuple[float, float]:
    """Server CPU ms per PUT and per GET of `count` objects of `size` bytes."""
    client, pid = server.client(), server.info["pid"]
    body = secrets.token_bytes(size)
    prefix = f"cpu-{size}-{secrets.token_hex(3)}"
    with ThreadPoolExecutor(threads) as pool:
        before = cpu_ms(pid)
        list(pool.map(lambda i: client.put_object("bench", f"{prefix}/{i}", io.BytesIO(body), size), range(count)))
        put = (cpu_ms(pid) - before) / count
        before = cpu_ms(pid)
        list(pool.map(lambda i: client.get_object("bench", f"{prefix}/{i}").read(), range(count)))
        get = (cpu_ms(pid) - before) / count
    return put, get


def volume_bytes(server: Server) -> int:
    """Bytes in SeaweedFS's volume files (.dat): what reached the volume server."""
    return sum(p.stat().st_size for p in (server.home / "s3" / "data").glob("*.dat"))


def small_objects(server: Server, count: int) -> list[str]:
    """Server CPU per PUT and GET of small objects, and volume bytes added per PUT."""
    lines = []
    for size in (400, 4 * KB):
        before = volume_bytes(server)
        put, get = put_get_cpu(server, size, count)
        added = (volume_bytes(server) - before) / count
        lines.append(f"CPU per {size} B PUT / GET: {put:.2f} / {get:.2f} ms; volume bytes per PUT: {added:.0f}")
    return lines


def with_weed_flags(flags: list[str]) -> None:
    """Start SeaweedFS with `flags` after the stack's own (a later flag wins in Go's parser)."""
    if not flags:
        return
    stack_command = seaweed.command
    seaweed.command = lambda home, ports: [*stack_command(home, ports), *flags]


# What each part of a small PUT's path is called in SeaweedFS 4.48's profile (cumulative shares).
# The parts run in different goroutines (the S3 gateway's handler is the client of the other three),
# so they do not nest and need not add up.
PROFILE_PARTS = {
    "S3 gateway: signature check (SigV4)": "s3api.(*IdentityAccessManagement).authRequestWithAuthType",
    "HTTP servers: connection handling, all requests (S3 and volume)": "net/http.(*conn).serve",
    "gRPC servers: all calls (filer, master, volume)": "grpc.(*Server).handleStream",
    "S3 gateway: PUT handler (its gRPC and HTTP calls included)": "s3api.(*S3ApiServer).PutObjectHandler",
    "filer: AssignVolume (a file id per PUT)": "filer_pb._SeaweedFiler_AssignVolume_Handler",
    "volume server: upload (HTTP, JWT check)": "server.(*VolumeServer).PostHandler",
    "filer: ObjectTransaction (the object's entry)": "filer_pb._SeaweedFiler_ObjectTransaction_Handler",
    "S3 gateway: GET handler": "s3api.(*S3ApiServer).GetObjectHandler",
    "filer store (leveldb) writes": "leveldb2.(*LevelDB2Store).InsertEntry",
    "filer metadata log and subscriptions": "log_buffer.(*LogBuffer)",
    "gRPC over TLS: writes": "crypto/tls.(*Conn).Write",
    "TLS handshakes": "crypto/tls.(*Conn).handshakeContext",
    "MD5 (ETag)": "crypto/md5.(*digest).Write",
    "garbage collection": "runtime.gcBgMarkWorker",
    "memory allocation": "runtime.mallocgc",
    "system calls": "syscall.Syscall",
}


def profile_small(count: int, tmp: Path) -> list[str]:
    """SeaweedFS's CPU profile over `count` 400 B and 4 KB PUTs and GETs (start-up included)."""
    profile_path = tmp / "weed.prof"
    with_weed_flags([f"-cpuprofile={profile_path}"])
    server = Server("seaweedfs", tmp)
    try:
        server.start()
        for size in (400, 4 * KB):
            put_get_cpu(server, size, count)
    finally:
        if server.info:
            stop(server.info, timeout=20)  # the profile is written on SIGTERM
            seaweed.remove_sockets(server.info["ports"])
    if not profile_path.exists():
        return ["no profile written (the server was killed before it could write it)"]
    profile = go_pprof.read(profile_path)
    lines = [f"SeaweedFS CPU profile, {count} PUTs + GETs of 400 B and of 4 KB: {profile.total / 1e9:.2f} s sampled"]
    for label, name in PROFILE_PARTS.items():
        share = max((n for f, n in profile.cumulative.items() if name in f), default=0)
        lines.append(f"  {100 * share / profile.total:5.1f}%  {label}")
    lines.append("  top functions by cumulative share:")
    lines += ["    " + row for row in profile.top(25, contains="seaweedfs")]
    return lines


def write_gigabytes(server: Server, gb: float, size: int = 1024 * KB, threads: int = 4) -> None:
    client = server.client()
    body = secrets.token_bytes(size)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: client.put_object("bench", f"bulk/{i}", io.BytesIO(body), size),
                      range(int(gb * 1024 ** 3 / size))))


def idle_cpu(pid: int, seconds: float = 20, settle: float = 5) -> float:
    time.sleep(settle)
    before = cpu_ms(pid)
    time.sleep(seconds)
    return (cpu_ms(pid) - before) / seconds


async def lost_acknowledged(bootstrap: str, messages: int, producers: int = 4) -> tuple[int, int, int]:
    """4 producers into one partition; returns (acknowledged, lost, duplicated)."""
    topic = f"bench-{secrets.token_hex(4)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    await admin.close()

    async def produce(p: int) -> list[str]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False,
                                    linger_ms=0, request_timeout_ms=30000)
        await producer.start()
        values = [f"p{p}-{i}" for i in range(messages // producers)]
        results: list = []
        try:
            for start in range(0, len(values), 10):
                futures = [await producer.send(topic, value=v.encode(), partition=0) for v in values[start:start + 10]]
                results += await asyncio.gather(*futures, return_exceptions=True)
        finally:
            await producer.stop()
        return [v for v, r in zip(values, results, strict=True) if not isinstance(r, BaseException)]

    acked = [v for run in await asyncio.gather(*(produce(p) for p in range(producers))) for v in run]
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    seen: dict[str, int] = {}
    wanted = set(acked)
    deadline = time.monotonic() + 180
    try:
        progress_at, done_at = time.monotonic(), None
        # Read until every acknowledged message is in (then 1 s more, for duplicates), or until
        # nothing new came for 15 s: a slow server's fetches must not read as losses.
        while time.monotonic() < deadline and time.monotonic() - progress_at < 15:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    seen[r.value.decode()] = seen.get(r.value.decode(), 0) + 1
                    progress_at = time.monotonic()
            if done_at is None and wanted <= seen.keys():
                done_at = time.monotonic()
            if done_at is not None and time.monotonic() - done_at > 1:
                break
    finally:
        await consumer.stop()
    return len(acked), sum(1 for v in acked if v not in seen), sum(1 for n in seen.values() if n > 1)


def _load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["seaweedfs", "moto"], default="seaweedfs")
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--small", type=int, default=0, help="small PUTs and GETs to measure (0: none)")
    parser.add_argument("--weed-flag", action="append", default=[], help="an extra flag for `weed server`")
    parser.add_argument("--profile", type=int, default=0, help="profile N small PUTs and GETs (SeaweedFS)")
    args = parser.parse_args()
    with_weed_flags(args.weed_flag)
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"server: seaweedfs {' '.join(args.weed_flag)} ({_load()})")
            print("\n".join(profile_small(args.profile, Path(tmp))))
        return 0
    small: list[str] = []
    acked = lost = dup = 0
    produce_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(args.server, Path(tmp))
        kafka = None
        try:
            info = server.start()
            put, get = put_get_cpu(server, 128 * KB, 400)
            put_big, _ = put_get_cpu(server, 20 * 1024 * KB, 5, threads=1)
            if args.small and server.kind == "seaweedfs":
                small = small_objects(server, args.small)
            started = time.perf_counter()
            write_gigabytes(server, args.gb)
            written_s = time.perf_counter() - started
            rss, peak = rss_mib(info["pid"]), rss_mib(info["pid"], "VmHWM")
            if args.messages:
                kafka = infra.start_kafka(info, Path(tmp) / "logs" / "kafka.log")
                started = time.perf_counter()
                acked, lost, dup = asyncio.run(lost_acknowledged(kafka["bootstrap"], args.messages))
                produce_s = time.perf_counter() - started
                stop(kafka)
                kafka = None
            server.stop()
            info = server.start()
            idle = idle_cpu(info["pid"])
        finally:
            if kafka:
                stop(kafka)
            if server.info:
                server.stop()
    t = TARGETS
    print(f"server: {args.server} {' '.join(args.weed_flag)} ({_load()})")
    print(f"CPU per 128 KB PUT: {put:.2f} ms (target <= {t['put_ms']}, ratio {put / t['put_ms']:.2f})")
    print(f"CPU per 128 KB GET: {get:.2f} ms (target <= {t['get_ms']}, ratio {get / t['get_ms']:.2f})")
    print(f"CPU per 20 MB PUT: {put_big:.0f} ms")
    for line in small:
        print(line)
    print(f"RSS after {args.gb:g} GB written ({written_s:.0f}s): {rss:.0f} MiB, peak {peak:.0f} MiB "
          f"(target <= {t['rss_mib']:.0f}, ratio {rss / t['rss_mib']:.2f})")
    print(f"idle CPU after restart: {idle:.1f} ms/s = {idle / 10:.2f}% of a core "
          f"(target <= {t['idle_ms_per_s']:.0f} ms/s, ratio {idle / t['idle_ms_per_s']:.2f})")
    print(f"4 producers, one partition: {acked} of {args.messages} acknowledged in {produce_s:.1f}s, "
          f"{lost} acknowledged lost (target 0), {dup} duplicated")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
