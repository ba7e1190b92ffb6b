"""What a release's object writes cost the local S3 server (SeaweedFS): the floor under the release
chain's 200 copies (issue 15, the chain from the last vote to a verified download).

On a fresh server holding a release's worth of DICOM objects (`--objects`, from the release
bench's synthetic archive, ~130 KB each), in rounds that alternate, each with 8 threads as the
release uses:

  copy     server-side copies on the checked ETag (If-Match), as `publish.copy_release_objects`
  put      the same bytes PUT from the client (what a release could write from the bytes its check
           read, instead of a copy)
  get      the GETs a release's checks make (`object_checks.check_object`)
  one put  all those bytes as one object (one request: the per-request part of a write)
  one copy a server-side copy of that one object

Each line gives the server's CPU over the round (its /proc clock) per object and per MB written
or read, this process's CPU per object, and the load average: on a shared machine read the
rounds side by side, never one alone. Session 12 (load 9-14): a copy and a PUT cost the server
the same, ~1.8-2.2 ms per 130 KB object (~15 ms per MB); one 26 MB object ~6-8 ms per MB written
by copy, ~12 ms per MB by PUT. Writing the bytes again is the cost: a cheaper request shape
saves the per-request part only.

Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_release_copies.py [--objects 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from minio import Minio

from radcurate.cpu_clock import process_cpu
from radcurate.demo import synth_data
from radcurate.stack import infra
from services.common.objectstore import ObjectStore, sha256_hex

WORKERS = 8  # as publish.COPY_WORKERS and object_checks.CHECK_WORKERS


def _round(store: ObjectStore, pid: int, blobs: dict[str, bytes], etags: dict[str, str], kind: str,
           n: int) -> tuple[float, float, float]:
    """One round of `kind`: (server CPU s, this process's CPU s, wall s)."""
    one = b"".join(blobs.values()) if kind == "one put" else b""
    jobs: dict[str, Callable[[str], object]] = {
        "copy": lambda k: store.copy("public", f"r{n}/{k}", "objects", k, match_etag=etags[k]),
        "put": lambda k: store.put_bytes("public", f"r{n}/{k}", blobs[k], "application/dicom",
                                         sha256=sha256_hex(blobs[k])),
        "get": lambda k: store.read_into("objects", k, lambda _: None),
    }
    s0, c0, t0 = process_cpu(pid), process_cpu(os.getpid()), time.perf_counter()
    if kind == "one put":
        store.put_bytes("public", f"r{n}/one", one, "application/octet-stream", sha256=sha256_hex(one))
    elif kind == "one copy":
        store.copy("public", f"r{n}/one-copy", "public", f"r{n}/one")
    else:
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(jobs[kind], blobs))
    return process_cpu(pid) - s0, process_cpu(os.getpid()) - c0, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200, help="objects per round (a release: 200)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("data") / "bench-release-1200-0",
                        help="a synthetic archive (made if missing: the release bench's default)")
    args = parser.parse_args()
    synth_data(1_200, 0, args.data.resolve())
    files = sorted((args.data / "dicom").iterdir())[:args.objects]
    blobs = {f"dicom/{i:05d}": f.read_bytes() for i, f in enumerate(files)}
    mb = sum(map(len, blobs.values())) / 1e6
    home = Path(tempfile.mkdtemp(prefix="bench-release-copies-"))
    key, secret = f"bench{secrets.token_hex(4)}", secrets.token_hex(16)
    info = infra.start_s3(home / "s3", home / "s3.log", key, secret, ["objects", "public"])
    print(f"{len(blobs)} objects, {mb:.1f} MB; load average at start "
          f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    try:
        store = ObjectStore(Minio(info["endpoint"], access_key=key, secret_key=secret, secure=False,
                                  region="us-east-1"))
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda k: store.put_bytes("objects", k, blobs[k], "application/dicom"), blobs))
        etags = {k: store.read_into("objects", k, lambda _: None) for k in blobs}
        for n in range(args.rounds):
            for kind in ("copy", "put", "get", "one put", "one copy"):
                server, client, wall = _round(store, info["pid"], blobs, etags, kind, n)
                per = len(blobs)
                print(f"  {kind:8s} server {server * 1000 / per:5.2f} ms per object, {server * 1000 / mb:5.1f} ms"
                      f" per MB; client {client * 1000 / per:5.2f} ms per object; wall {wall:.3f}s"
                      f" (load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        infra.stop(info, timeout=3)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
