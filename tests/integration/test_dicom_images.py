"""Real DICOM through the gateway's HTTP API against real Postgres and S3: JPEG lossless, JPEG-LS
and JPEG 2000 studies are ingested and their images served; derivatives are made when a study is
assigned for review and served from the object store; anything that cannot be shown, and anything
over the bounds, answers problem+json; the raw DICOM stays available."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from services.common.contracts import ModelProvenance, Protocol, ReviewAssigned
from services.gateway.app import GatewaySettings, build_app
from services.gateway.derivatives import FULL, MASTER, derivative_key, sized
from services.gateway.handlers import on_review_assigned, prepare_images
from services.gateway.render import render
from services.gateway.repo import studies

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::UserWarning")]
REPORT = "Heart size normal. No pneumothorax."
TOKEN = "images-admin-token"


def real_file(name: str) -> bytes:
    return Path(get_testdata_file(name, download=False)).read_bytes()


def settings_for(infra: dict, dsn: str, **extra) -> GatewaySettings:
    s3 = infra["s3"]
    return GatewaySettings(database_url=dsn, kafka_bootstrap=infra["kafka"]["bootstrap"], s3_endpoint=s3["endpoint"],
                           s3_access_key=s3["access_key"], s3_secret_key=s3["secret_key"],
                           objects_bucket=infra["buckets"]["objects"], admin_token=TOKEN, **extra)


async def gateway(settings: GatewaySettings):
    """The gateway app in this process, its lifespan entered (database, store, consumer)."""
    app = build_app(settings)
    ctx = app.router.lifespan_context(app)
    await ctx.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                               headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    return app, ctx, client


@pytest.fixture
async def api(infra, gateway_dsn):
    app, ctx, client = await gateway(settings_for(infra, gateway_dsn))
    yield app, client
    await client.aclose()
    await ctx.__aexit__(None, None, None)


async def ingest(client: httpx.AsyncClient, study_id: str, files: list[tuple[str, bytes]]) -> httpx.Response:
    return await client.post("/api/v1/studies", data={"study_id": study_id, "patient_id": f"P-{study_id}",
                                                      "report": REPORT, "scrub": "true"},
                             files=[("files", (name, data, "application/dicom")) for name, data in files])


def assert_problem(resp: httpx.Response, status: int, text: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["status"] == status and text in resp.json()["detail"]


def pixels(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))


def counts(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        return tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("studies", "study_objects"))


@pytest.mark.parametrize("name", ["JPEG-LL.dcm", "emri_small_jpeg_ls_lossless.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm"])
async def test_jpeg_lossless_and_jpeg_ls_studies_are_shown(api, name):
    """These were accepted and then answered a bare 500 on every image request."""
    _, client = api
    assert (await ingest(client, f"IMG-{name}", [(name, real_file(name))])).status_code == 201
    resp = await client.get(f"/api/v1/studies/IMG-{name}/image", params={"size": 4096})
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    assert np.array_equal(pixels(resp.content), pixels(render(real_file(name), size=4096)))


async def test_a_review_assignment_prepares_the_images_and_the_endpoint_serves_them(api, gateway_dsn):
    app, client = api
    res = app.state.resources
    files = [("RG1_J2KR.dcm", real_file("RG1_J2KR.dcm")), ("RG1_J2KI.dcm", real_file("RG1_J2KI.dcm"))]
    created = (await ingest(client, "CXR-RG1", files)).json()
    derivatives = res.extra["derivatives"]
    shas = [o["sha256"] for o in created["objects"]]
    assert not res.store.exists(res.settings.objects_bucket, derivative_key(shas[0], MASTER))
    event = ReviewAssigned(study_id="CXR-RG1", run_id="run-1", patient_id="P-CXR-RG1", readers=["r1", "r2", "r3"],
                           reason="", difficulty="easy", suggested=[], taxonomy_version="t",
                           extraction=ModelProvenance(backend="rules"), mapping=ModelProvenance(backend="lexicon"),
                           protocol=Protocol.CXR)
    async with res.pool.connection() as conn:
        await prepare_images(derivatives)(conn, event, None)
    await derivatives.drain()
    for sha in shas:
        for variant in (MASTER, FULL, sized(1024, "jpeg"), sized(2048, "jpeg")):
            assert res.store.exists(res.settings.objects_bucket, derivative_key(sha, variant)), variant
    # Served from the store: the stored derivative's bytes, not a fresh render.
    stored = res.store.get_bytes(res.settings.objects_bucket, derivative_key(shas[0], sized(1024, "jpeg")))
    resp = await client.get("/api/v1/studies/CXR-RG1/image", params={"format": "jpeg", "size": 1024})
    assert resp.status_code == 200 and resp.content == stored
    full = await client.get("/api/v1/studies/CXR-RG1/image", params={"size": 4096})
    assert pixels(full.content).shape == (1955, 1841)
    assert np.array_equal(pixels(full.content), pixels(render(files[0][1], size=4096)))
    # Re-windowing uses the 16-bit master: the same as windowing the DICOM itself.
    windowed = await client.get("/api/v1/studies/CXR-RG1/image",
                                params={"size": 4096, "window_center": 20000, "window_width": 8000})
    assert np.array_equal(pixels(windowed.content), pixels(render(files[0][1], center=20000, width=8000, size=4096)))
    # The raw DICOM stays available, presigned.
    links = (await client.get("/api/v1/studies/CXR-RG1/dicom")).json()
    raw = httpx.get(links[0]["url"]).content
    assert pydicom.dcmread(io.BytesIO(raw)).Rows == 1955


def assigned(study_id: str, readers: list[str]) -> ReviewAssigned:
    return ReviewAssigned(study_id=study_id, run_id="run-1", patient_id=f"P-{study_id}", readers=readers, reason="",
                          difficulty="easy", suggested=[], taxonomy_version="t",
                          extraction=ModelProvenance(backend="rules"), mapping=ModelProvenance(backend="lexicon"),
                          protocol=Protocol.CXR)


async def test_images_are_not_made_ahead_for_a_study_every_reader_has_voted_on(api):
    """A fast panel outruns the background queue: a study whose reads are all voted when its turn
    comes is skipped (the endpoint still makes its images on request), while a study whose
    review-assigned has not committed yet, or with a read still open, is prepared."""
    app, client = api
    res = app.state.resources
    derivatives = res.extra["derivatives"]
    made = {}
    for study_id, name in (("DONE-1", "MR2_J2KR.dcm"), ("OPEN-2", "RG1_J2KR.dcm"), ("NEW-3", "US1_J2KR.dcm")):
        created = (await ingest(client, study_id, [(name, real_file(name))])).json()
        made[study_id] = created["objects"][0]["sha256"]
    async with res.pool.connection() as conn:
        await on_review_assigned(conn, assigned("DONE-1", ["r1", "r2"]), None)
        await on_review_assigned(conn, assigned("OPEN-2", ["r1", "r2"]), None)
        await conn.execute("UPDATE assignments SET status = 'voted' WHERE study_id = 'DONE-1'"
                           " OR (study_id = 'OPEN-2' AND reader_id = 'r1')")
    async with res.pool.connection() as conn:
        queued = [d for s in made for d in await studies.object_digests(conn, s)]  # NEW-3 has no read committed
    derivatives.schedule(queued)
    await derivatives.drain()

    def stored(study_id: str) -> bool:
        return res.store.exists(res.settings.objects_bucket, derivative_key(made[study_id], MASTER))
    assert (stored("DONE-1"), stored("OPEN-2"), stored("NEW-3")) == (False, True, True)
    resp = await client.get("/api/v1/studies/DONE-1/image", params={"format": "jpeg", "size": 1024})
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
    assert stored("DONE-1")


async def test_an_image_that_is_not_yet_prepared_is_made_on_request_and_kept(api):
    app, client = api
    res = app.state.resources
    created = (await ingest(client, "US-1", [("US1_J2KR.dcm", real_file("US1_J2KR.dcm"))])).json()
    sha = created["objects"][0]["sha256"]
    resp = await client.get("/api/v1/studies/US-1/image", params={"format": "jpeg", "size": 1024})
    assert resp.status_code == 200 and pixels(resp.content).shape == (480, 640, 3)
    assert res.store.exists(res.settings.objects_bucket, derivative_key(sha, sized(1024, "jpeg")))


async def test_a_sweep_of_float_windows_fills_a_bounded_number_of_cache_entries(api):
    """Issue 11 item 15: every distinct float window was a new render and a new cache entry."""
    app, client = api
    assert (await ingest(client, "CT-SWEEP", [("CT_small.dcm", real_file("CT_small.dcm"))])).status_code == 201
    derivatives = app.state.resources.extra["derivatives"]
    before = len(derivatives.cache)
    rng = np.random.default_rng(15)
    bodies = set()
    for _ in range(40):
        params = {"window_center": 40 + rng.uniform(-0.4, 0.4), "window_width": 400 + rng.uniform(-0.4, 0.4),
                  "size": 128}
        resp = await client.get("/api/v1/studies/CT-SWEEP/image", params=params)
        assert resp.status_code == 200, resp.text
        bodies.add(resp.content)
    assert len(derivatives.cache) - before <= 2 and len(bodies) <= 2  # width 400: a grid of 1
    nan = await client.get("/api/v1/studies/CT-SWEEP/image", params={"window_center": "nan", "window_width": 400})
    assert_problem(nan, 422, "finite")


async def test_an_object_that_cannot_be_decoded_answers_problem_json(infra, gateway_dsn, tmp_path):
    """With the ingest decode check off, a corrupt stream gets in; its image is then a 422
    problem+json naming the object, and the connection carries on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file("JPEG-lossy.dcm", download=False))  # libjpeg cannot decode it
    ds.remove_private_tags()
    path = tmp_path / "bad.dcm"
    ds.save_as(path, enforce_file_format=True)
    app, ctx, client = await gateway(settings_for(infra, gateway_dsn, verify_decode=False))
    try:
        assert (await ingest(client, "BAD-1", [("bad.dcm", path.read_bytes())])).status_code == 201
        resp = await client.get("/api/v1/studies/BAD-1/image")
        assert_problem(resp, 422, "cannot be shown: cannot decode the pixel data")
        assert (await client.get("/api/v1/studies/BAD-1")).status_code == 200  # same client, still served
    finally:
        await client.aclose()
        await ctx.__aexit__(None, None, None)


async def test_objects_over_the_bounds_are_refused_before_decoding(infra, gateway_dsn):
    app, ctx, client = await gateway(settings_for(infra, gateway_dsn, max_object_bytes=1_000_000,
                                                  max_pixels=1_000_000))
    try:
        assert_problem(await ingest(client, "BIG-1", [("RG1_UNCR.dcm", real_file("RG1_UNCR.dcm"))]),
                       413, "RG1_UNCR.dcm: 7200056 bytes is over the limit of 1000000 bytes per object")
        assert_problem(await ingest(client, "BIG-2", [("RG1_J2KI.dcm", real_file("RG1_J2KI.dcm"))]),
                       413, "RG1_J2KI.dcm: 1955 × 1841 pixels × 1 frame(s) is over the limit of 1000000 pixels")
        assert_problem(await ingest(client, "SEG-1", [("liver.dcm", real_file("liver.dcm"))]),
                       422, "liver.dcm: a Segmentation object is an annotation")
    finally:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
    assert counts(gateway_dsn) == (0, 0)


async def test_a_restarted_gateway_prepares_the_reads_still_open(infra, gateway_dsn):
    app, ctx, client = await gateway(settings_for(infra, gateway_dsn, derivative_workers=0))  # nothing made ahead
    try:
        created = (await ingest(client, "OPEN-1", [("MR2_J2KR.dcm", real_file("MR2_J2KR.dcm"))])).json()
        event = ReviewAssigned(study_id="OPEN-1", run_id="run-1", patient_id="P-OPEN-1", readers=["r1"],
                               reason="", difficulty="easy", suggested=[], taxonomy_version="t",
                               extraction=ModelProvenance(backend="rules"), mapping=ModelProvenance(backend="lexicon"),
                               protocol=Protocol.CXR)
        res = app.state.resources
        async with res.pool.connection() as conn:
            await prepare_images(res.extra["derivatives"])(conn, event, None)
    finally:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
    key = derivative_key(created["objects"][0]["sha256"], sized(2048, "jpeg"))
    assert not res.store.exists(res.settings.objects_bucket, key)
    app, ctx, client = await gateway(settings_for(infra, gateway_dsn))  # restarted with workers
    try:
        await app.state.resources.extra["derivatives"].drain()
        assert app.state.resources.store.exists(res.settings.objects_bucket, key)
    finally:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
