"""Issue 11 item 1 end to end: a lumbar MRI of 2,400 instances (over twice what fitted in an event
when the instance list travelled inline) flows through all five services to labels-suggested and
a sampling run, every event staying small; a study whose manifest was tampered with after its
event was recorded is dead-lettered by consensus with the reason, and replays once it is restored."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator

import pytest

from radcurate.client import Gateway
from radcurate.demo import ingest_folder, store_for
from radcurate.simulate import register_panel
from radcurate.stack import local
from radcurate.synth.lumbar import synth_lumbar
from services.common import manifests, outbox
from services.common.contracts import ObjectsManifest, Protocol
from tests.e2e.conftest import at_least, eventually, query, scalar
from tests.support.factories import add_series

pytestmark = pytest.mark.e2e
LUMBAR = Protocol.LUMBAR.value
INSTANCES, STUDIES = 2400, 4
SERVICES = ("gateway", "extractor", "mapper", "sampler", "consensus")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The whole stack; the gateway makes no display derivatives ahead (2,400 images of no reader)."""
    state_dir = tmp_path_factory.mktemp("large-stack")
    state = local.up(state_dir, service_env={"RADCURATE_GATEWAY_DERIVATIVE_WORKERS": "0"})
    yield state
    local.down(state_dir)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("large-data")
    synth_lumbar(STUDIES, seed=11, out_dir=out)
    rows = list(csv.DictReader(open(out / "reports.csv")))
    add_series(out / "dicom" / rows[0]["study_id"], instances=INSTANCES)
    return out, [r["study_id"] for r in rows]


def _manifest(stack: dict, study_id: str) -> ObjectsManifest:
    [(payload,)] = query(stack, "gateway",
                         "SELECT payload FROM outbox WHERE topic = 'report-ingested' AND msg_key = %s", (study_id,))
    return ObjectsManifest.model_validate(payload["objects_manifest"])


async def _letters(admin: Gateway) -> list[dict]:
    return (await admin.request("GET", "/api/v1/admin/dead-letters", params={"topic": "review-assigned"})).json()


async def test_a_2400_instance_study_flows_to_sampling_and_a_tampered_manifest_is_dead_lettered(stack, admin, data):
    folder, ids = data
    big, tampered = ids[0], ids[1]
    started = time.monotonic()
    summary = await ingest_folder(stack, folder, protocol=Protocol.LUMBAR)
    print(f"ingest of {STUDIES} studies ({INSTANCES} + {3 * 39} instances): {time.monotonic() - started:.1f} s")
    assert summary.ingested == STUDIES and not summary.rejected
    assert scalar(stack, "gateway", "SELECT count(*) FROM study_objects WHERE study_id = %s", (big,)) == INSTANCES
    assert _manifest(stack, big).count == INSTANCES
    await eventually(lambda: at_least(admin, "suggested", STUDIES, LUMBAR), "labels suggested for every study", 180)

    # After the event was recorded, someone rewrites one study's manifest (one instance dropped).
    store, bucket = store_for(stack), stack["buckets"]["objects"]
    ref = _manifest(stack, tampered)
    original = store.get_bytes(bucket, ref.key)
    listed = manifests.decode(tampered, ref, original)
    store.put_bytes(bucket, ref.key, manifests.encode(tampered, listed[:-1]))

    readers = await register_panel(admin, 3, seed=1, prefix="big")
    await admin.request_sampling({"n": STUDIES, "readers_per_study": 3, "seed": 2}, [r.user_id for r in readers],
                                 LUMBAR)
    await eventually(lambda: scalar(stack, "consensus", "SELECT count(*) FROM inbox WHERE topic = 'review-assigned'")
                     == STUDIES, "consensus to see every review assignment", 180)
    assert scalar(stack, "sampler", "SELECT count(*) FROM sampled") == STUDIES
    assert scalar(stack, "gateway", "SELECT count(*) FROM assignments WHERE study_id = %s", (big,)) == 3
    assert scalar(stack, "consensus", "SELECT jsonb_array_length(objects) FROM assignments WHERE study_id = %s",
                  (big,)) == INSTANCES
    assert scalar(stack, "consensus", "SELECT count(*) FROM assignments") == STUDIES - 1

    # The tampered study: a dead letter whose error says what differs; nothing else was refused.
    await eventually(lambda: _any(_letters(admin)), "the dead letter on review-assigned.dlq", 60)
    [letter] = await _letters(admin)
    assert letter["service"] == "consensus"
    assert f"instance manifest {ref.key} of study {tampered}: sha256 of the stored bytes is" in letter["error"]
    for svc in SERVICES:
        dead = scalar(stack, svc, "SELECT count(*) FROM inbox WHERE outcome = 'dead_lettered'")
        assert dead == int(svc == "consensus"), svc
    # Every event stayed small, the 2,400-instance study's too; none was parked.
    sizes = {svc: scalar(stack, svc, "SELECT max(octet_length(payload::text)) FROM outbox WHERE topic NOT LIKE %s",
                        ("%.dlq",))
             for svc in SERVICES if svc != "consensus"}
    print(f"largest event per service (bytes): {sizes}")
    assert max(sizes.values()) < 64 * 1024 < outbox.MAX_EVENT_BYTES
    assert all(scalar(stack, s, "SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL") == 0 for s in SERVICES)

    # Restored, the letter replays and the study takes its place with its full list.
    store.put_bytes(bucket, ref.key, original)
    resp = await admin.request("POST", f"/api/v1/admin/dead-letters/{letter['event_id']}/replay",
                               json={"reason": "manifest restored"})
    assert resp.status_code == 202, resp.text
    await eventually(lambda: scalar(stack, "consensus", "SELECT count(*) FROM assignments") == STUDIES,
                     "the replayed assignment", 60)
    assert scalar(stack, "consensus", "SELECT jsonb_array_length(objects) FROM assignments WHERE study_id = %s",
                  (tampered,)) == ref.count


async def _any(letters) -> bool:
    return bool(await letters)
