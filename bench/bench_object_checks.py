"""CPU per de-identification check of a stored object (consensus's object_checks.check_object):
the read through minio's get_object (urllib3) against the lean kept-alive GET
(`ObjectStore.read_into`), and the profile check itself, each on the client and on the S3 server.

Starts the local S3 server alone, stores N of the bench's synthetic CXR objects de-identified as
ingest stores them, then runs each way over all of them in turn (ABAB..., `--rounds` times) with
8 threads as a release does, printing the client's and the S3 server's CPU per object (from /proc)
with the load average. The client's CPU is this process's own, so nothing else on the machine is
counted; compare the ways within a round. The last way is the profile check alone (deid.check_bytes
on bytes already held): run this file with another tree's PYTHONPATH for a pair of that alone.

Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_object_checks.py [--objects 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from radcurate.cpu_clock import process_cpu
from radcurate.demo import store_for, synth_data
from radcurate.stack import local
from services.common.objectstore import ObjectStore
from services.consensus import object_checks


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def minio_read(store: ObjectStore, bucket: str, key: str) -> int:
    """The read as check_object made it before the lean GET (minio's get_object, 1 MiB reads)."""
    response = store.client.get_object(bucket, key)
    try:
        digest, size = hashlib.sha256(), 0
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    finally:
        response.close()
        response.release_conn()
    return size


def lean_read(store: ObjectStore, bucket: str, key: str) -> int:
    digest, pieces = hashlib.sha256(), []

    def sink(chunk: bytes) -> None:
        digest.update(chunk)
        pieces.append(len(chunk))
    store.read_into(bucket, key, sink)
    return sum(pieces)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import pydicom

    from services.gateway.ingest import parse_instance

    data_dir = (Path("data") / "bench-release-1200-0").resolve()
    synth_data(1200, 0, data_dir)
    files = sorted((data_dir / "dicom").glob("*.dcm"))[:args.objects]
    work = Path(tempfile.mkdtemp(prefix="bench-checks-"))
    state = local.up(work / "stack", services_to_run=())
    try:
        store, bucket = store_for(state), state["buckets"]["objects"]
        keys = [store.put_content_addressed(bucket, parse_instance(
            f.name, f.read_bytes(), scrub=True,
            patient_id=str(pydicom.dcmread(f, stop_before_pixels=True).PatientID))[0].data) for f in files]
        size = sum(len(f.read_bytes()) for f in files) / len(files)
        object_checks.import_checker()
        print(f"{len(keys)} objects of ~{size / 1024:.0f} KiB; load {load()}", flush=True)
        from services.common import deid

        held = {k: store.get_bytes(bucket, k) for k in keys}
        ways: dict[str, Callable[[str], object]] = {
            "minio GET": lambda k: minio_read(store, bucket, k),
            "lean GET": lambda k: lean_read(store, bucket, k),
            "check (lean GET + profile)": lambda k: object_checks.check_object(store, bucket, k),
            # deid.check_bytes alone, on bytes already held (a file object: main's takes no bytes)
            "profile only (in memory)": lambda k: deid.check_bytes(io.BytesIO(held[k])),
        }
        s3_pid = state["s3"]["pid"]
        for r in range(args.rounds):
            for name, way in ways.items():
                client0, s3_0, t0 = process_cpu(os.getpid()), process_cpu(s3_pid), time.perf_counter()
                with ThreadPoolExecutor(max_workers=object_checks.CHECK_WORKERS) as pool:
                    list(pool.map(way, keys))
                wall = time.perf_counter() - t0
                client, s3 = process_cpu(os.getpid()) - client0, process_cpu(s3_pid) - s3_0
                print(f"  round {r + 1} {name:28s} client {client / len(keys) * 1000:5.2f} ms, S3 server "
                      f"{s3 / len(keys) * 1000:5.2f} ms CPU per object; {wall:.2f}s wall (load {load()})", flush=True)
    finally:
        local.down(work / "stack")
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
