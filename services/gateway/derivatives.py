"""Display-ready derivatives of each DICOM object, made ahead of the reader.

Decoding a real JPEG 2000 chest radiograph costs ~0.5–1.2 s of CPU, far over the reviewer page's
150 ms from keypress to next image. So when a study is assigned for review (only sampled studies
are ever read) the gateway decodes each of its objects once and stores, keyed by the object's
content hash and the renderer's version:
- `default-full.png`: 8-bit, native size, the file's own VOI (lossless: any other size is a resize);
- `default-<size>.jpeg` for each configured size: what the reviewer page asks for;
- `master16.png`: the modality values in 16 bits, to re-window without decoding the DICOM again.
The image endpoint serves these; when they are missing (an old study, a lost background job, a
study every reader had voted on before its turn came) it makes them itself, once, and stores them
for the next request.

Work made ahead is only worth doing while a reader may still open the study: a queued object whose
study has been voted on by all its readers is skipped when its turn comes. A fast panel outruns the
queue (two decodes at a time), and the backlog would otherwise keep the gateway and the S3 server
busy long after the last vote, into the release that follows (issue 15 §5: gateway 2.6-3.0 s of CPU
in the 4-7 s between the last vote and the downloaded release).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, Iterable

import numpy as np
from minio.error import S3Error
from PIL import Image

from services.common.objectstore import ObjectStore
from services.gateway.render import (
    RenderCache,
    decode,
    encode,
    from_master,
    master_png,
    quantise_size,
    quantise_window,
    to_8bit,
    voi,
)
from services.gateway.repo import assignments

log = logging.getLogger(__name__)
RENDER_VERSION = "r1"  # part of every key: a change to rendering makes new derivatives, never stale ones
FULL = "default-full.png"
MASTER = "master16.png"
FORMATS = {"png": "image/png", "jpeg": "image/jpeg"}


def derivative_key(sha256: str, variant: str) -> str:
    return f"derived/{RENDER_VERSION}/sha256/{sha256[:2]}/{sha256}/{variant}"


# Whether a study may still be opened by a reader (see `Derivatives`): study id -> bool.
StillToRead = Callable[[str], Awaitable[bool]]


async def _always(_: str) -> bool:
    return True


def sized(size: int, fmt: str) -> str:
    return f"default-{size}.{fmt}"


def make(dicom: bytes, sizes: Iterable[int]) -> dict[str, bytes]:
    """Every derivative of one object (one decode). Raises RenderError."""
    frame = decode(dicom)
    shown = to_8bit(voi(frame))
    made = {MASTER: master_png(frame), FULL: encode(shown, max(shown.shape[:2]), "png")}
    for size in sizes:
        made[sized(size, "jpeg")] = encode(shown, size, "jpeg")
    return made


def _resize(png: bytes, size: int, fmt: str) -> bytes:
    img = Image.open(io.BytesIO(png))
    img.load()
    if max(img.size) <= size and fmt == "png":
        return png
    return encode(np.asarray(img), size, fmt)


def _rewindow(master: bytes, center: float, width: float, size: int, fmt: str) -> bytes:
    return encode(to_8bit(voi(from_master(master), center, width)), size, fmt)


class Derivatives:
    """Makes, stores and serves derivatives. One per gateway process (in Resources.extra)."""

    def __init__(self, store: ObjectStore, bucket: str, *, sizes: Iterable[int] = (1024, 2048),
                 workers: int = 2, cache_items: int = 512, still_to_read: StillToRead = _always) -> None:
        self.store, self.bucket, self.sizes = store, bucket, tuple(sizes)
        self._still_to_read = still_to_read
        self._cpu = asyncio.Semaphore(max(workers, 1))  # decodes at once: the API must stay responsive
        self._inflight: dict[str, asyncio.Task] = {}
        self._queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self._workers: list[asyncio.Task] = []
        self._n_workers = workers
        self.cache = RenderCache(cache_items)

    # --- ahead of the reader -------------------------------------------------------------------

    def schedule(self, objects: Iterable[tuple[str, str, str]]) -> None:
        """Queue (sha256, object_key, study_id) triples; background workers make what is missing
        for studies still to be read when their turn comes (with no workers configured nothing is
        made ahead: the image endpoint makes it on request)."""
        if self._n_workers == 0:
            return
        if not self._workers:
            self._workers = [asyncio.create_task(self._work(), name=f"derivatives-{i}") for i in range(self._n_workers)]
        for item in objects:
            self._queue.put_nowait(item)

    async def _work(self) -> None:
        while True:
            sha, key, study_id = await self._queue.get()
            try:
                # One indexed row read before an S3 HEAD: after a fast panel most of the queue is
                # studies nobody will open any more.
                if await self._still_to_read(study_id) and \
                        not await asyncio.to_thread(self.store.exists, self.bucket, derivative_key(sha, MASTER)):
                    await self.ensure(sha, key)
            except Exception:  # one bad object must not stop the queue; the endpoint will say why
                log.warning("derivatives of %s failed", key, exc_info=True)
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every scheduled object is done (tests, benchmarks)."""
        await self._queue.join()

    async def aclose(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def ensure(self, sha: str, object_key: str) -> dict[str, bytes]:
        """Make and store all derivatives of one object (once, however many callers ask)."""
        task = self._inflight.get(sha)
        if task is None:
            task = asyncio.create_task(self._make_and_store(sha, object_key))
            self._inflight[sha] = task
            task.add_done_callback(lambda _: self._inflight.pop(sha, None))
        return await asyncio.shield(task)

    async def _make_and_store(self, sha: str, object_key: str) -> dict[str, bytes]:
        async with self._cpu:
            data = await self.store.aget_bytes(self.bucket, object_key)
            made = await asyncio.to_thread(make, data, self.sizes)
        del data

        def put_all() -> None:
            for variant, body in made.items():
                self.store.put_bytes(self.bucket, derivative_key(sha, variant), body,
                                     FORMATS[variant.rsplit(".", 1)[1]])

        await asyncio.to_thread(put_all)
        return made

    # --- on request ----------------------------------------------------------------------------

    async def _get(self, sha: str, object_key: str, variant: str) -> bytes:
        """A stored derivative, made first if missing."""
        try:
            return await asyncio.to_thread(self.store.get_bytes, self.bucket, derivative_key(sha, variant))
        except S3Error as exc:
            if exc.code not in ("NoSuchKey", "NoSuchObject", "NotFound"):
                raise
        return (await self.ensure(sha, object_key))[variant]

    async def image(self, sha: str, object_key: str, *, center: float | None, width: float | None,
                    size: int, fmt: str) -> bytes:
        """The image as the reviewer page asks for it, its window and size quantised (render.py:
        what forms the cache key is what is rendered). Raises RenderError."""
        center, width = quantise_window(center, width)
        size = quantise_size(size, self.sizes)
        cache_key = (sha, center, width, size, fmt)
        body = self.cache.get(cache_key)
        if body is not None:
            return body
        if center is not None and width is not None:
            master = await self._get(sha, object_key, MASTER)
            body = await asyncio.to_thread(_rewindow, master, center, width, size, fmt)
        elif fmt == "jpeg" and size in self.sizes:
            body = await self._get(sha, object_key, sized(size, fmt))
        else:
            body = await asyncio.to_thread(_resize, await self._get(sha, object_key, FULL), size, fmt)
        self.cache.put(cache_key, body)
        return body


def derivatives_for(res) -> Derivatives:
    """The process's Derivatives (made on first use, closed with the Resources), making ahead only
    for studies a reader may still open."""
    found = res.extra.get("derivatives")
    if found is None:
        s = res.settings

        async def still_to_read(study_id: str) -> bool:
            async with res.pool.connection() as conn:
                return await assignments.still_to_read(conn, study_id)

        found = Derivatives(res.store, s.objects_bucket, sizes=getattr(s, "derivative_sizes", (1024, 2048)),
                            workers=getattr(s, "derivative_workers", 2), still_to_read=still_to_read)
        res.extra["derivatives"] = found
    return found
