"""The object store (MinIO in production, any S3 server locally), reached with the minio client.

DICOM and release files are stored under content-addressed keys (sha256 of the bytes), so storing
the same bytes twice is a no-op and a key is its own integrity check. The minio client blocks:
async callers go through `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from datetime import datetime, timedelta
from typing import BinaryIO

import certifi
import urllib3
from minio import Minio
from minio.error import S3Error

from services.common.settings import ServiceSettings


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_key(data: bytes, prefix: str = "dicom") -> str:
    digest = sha256_hex(data)
    return f"{prefix}/sha256/{digest[:2]}/{digest}"


def http_client(connect_s: float, read_s: float, pool_size: int = 16) -> urllib3.PoolManager:
    """The minio client's transport with explicit timeouts. minio's own default waits 300 s to
    connect and 300 s per read, with five retries: an object-store outage would hold a consumer
    (and, where a handler writes to the store inside its transaction, a database transaction)
    for up to half an hour before the failure is even seen. Fail fast instead; the consumer
    pauses and retries the event later (`failures.is_transient`)."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_s, read=read_s),
        maxsize=pool_size,
        cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


class ObjectStore:
    def __init__(self, client: Minio) -> None:
        self.client = client

    @classmethod
    def from_settings(cls, s: ServiceSettings) -> ObjectStore:
        return cls(
            Minio(
                s.s3_endpoint,
                access_key=s.s3_access_key.get_secret_value(),
                secret_key=s.s3_secret_key.get_secret_value(),
                secure=s.s3_secure,
                region="us-east-1",
                http_client=http_client(s.s3_connect_timeout_seconds, s.s3_read_timeout_seconds),
            )
        )

    def ensure_bucket(self, bucket: str) -> None:
        if not self.client.bucket_exists(bucket):
            try:
                self.client.make_bucket(bucket)
            except S3Error as exc:  # created by a concurrent starter
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def put_stream(self, bucket: str, key: str, fp: BinaryIO, length: int,
                   content_type: str = "application/octet-stream") -> None:
        """Store `length` bytes read from an open file (large objects stay out of memory)."""
        self.client.put_object(bucket, key, fp, length, content_type=content_type)

    def put_content_addressed(self, bucket: str, data: bytes, prefix: str = "dicom",
                              content_type: str = "application/dicom") -> str:
        """Store bytes under their sha256 key. Writing the same bytes again is harmless, so there is
        no existence check first (it would cost a round trip per object on the hot ingest path)."""
        key = content_key(data, prefix)
        self.put_bytes(bucket, key, data, content_type)
        return key

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.client.stat_object(bucket, key)
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise

    def listing(self, bucket: str, prefix: str) -> list[tuple[str, datetime]]:
        """(key, last modified) of every object under `prefix`, recursively."""
        return [(o.object_name, o.last_modified) for o in self.client.list_objects(bucket, prefix, recursive=True)
                if o.object_name is not None and o.last_modified is not None]

    def modified_at(self, bucket: str, key: str) -> datetime | None:
        """When the object was last written, or None when there is none."""
        try:
            return self.client.stat_object(bucket, key).last_modified
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return None
            raise

    def delete(self, bucket: str, key: str) -> None:
        self.client.remove_object(bucket, key)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        resp = self.client.get_object(bucket, key)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def presigned_get(self, bucket: str, key: str, seconds: int = 300) -> str:
        return self.client.presigned_get_object(bucket, key, expires=timedelta(seconds=seconds))

    async def aget_bytes(self, bucket: str, key: str) -> bytes:
        return await asyncio.to_thread(self.get_bytes, bucket, key)

    async def aput_bytes(self, bucket: str, key: str, data: bytes,
                         content_type: str = "application/octet-stream") -> None:
        await asyncio.to_thread(self.put_bytes, bucket, key, data, content_type)
