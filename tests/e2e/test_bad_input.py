"""Bad input over HTTP gets a clear problem+json answer and changes nothing else."""

from __future__ import annotations

import httpx
import pytest

from radcurate.client import Gateway
from tests.e2e.conftest import eventually, scalar
from tests.support.factories import dicom_bytes

pytestmark = pytest.mark.e2e
REPORT = "Right lower lobe consolidation. Small right pleural effusion."


async def ingest_http(stack, study_id: str, data: bytes, report: str = REPORT) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack["gateway_url"]) as client:
        return await client.post("/api/v1/studies", headers={"Authorization": f"Bearer {stack['admin_token']}"},
                                 data={"study_id": study_id, "patient_id": f"P-{study_id}", "report": report},
                                 files=[("files", (f"{study_id}.dcm", data, "application/dicom"))])


def assert_problem(resp: httpx.Response, status: int, text: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and text in body["detail"]
    return body


async def test_ingest_over_http_refuses_bad_studies_and_stores_nothing(stack, tmp_path):
    before = scalar(stack, "gateway", "SELECT count(*) FROM studies")
    assert_problem(await ingest_http(stack, "HTTP-X1", b"GIF89a not dicom"), 422, "not a readable DICOM file")
    assert_problem(await ingest_http(stack, "HTTP-X2", dicom_bytes(tmp_path, "HTTP-X2", identifiable=True)),
                   422, "identifying data (AccessionNumber, InstitutionName, ReferringPhysicianName")
    assert_problem(await ingest_http(stack, "HTTP-X3", dicom_bytes(tmp_path, "HTTP-X3"), report=" "),
                   422, "report text is empty")
    assert scalar(stack, "gateway", "SELECT count(*) FROM studies") == before
    ok = await ingest_http(stack, "HTTP-OK", dicom_bytes(tmp_path, "HTTP-OK"))
    assert ok.status_code == 201 and ok.json()["status"] == "ingested"
    again = await ingest_http(stack, "HTTP-OK", dicom_bytes(tmp_path, "HTTP-OK"))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"


async def test_a_request_with_a_field_the_api_does_not_know_is_refused_naming_it(stack, admin):
    async with httpx.AsyncClient(base_url=stack["gateway_url"]) as client:
        resp = await client.post("/api/v1/users", headers={"Authorization": f"Bearer {stack['admin_token']}"},
                                 json={"user_id": "typo-1", "role": "reviewer", "roles": ["curator"]})
    problem = assert_problem(resp, 422, "body.roles: Extra inputs are not permitted")
    assert problem["errors"] == [{"loc": ["body", "roles"], "msg": "Extra inputs are not permitted"}]
    assert scalar(stack, "gateway", "SELECT count(*) FROM users WHERE user_id = 'typo-1'") == 0


async def test_votes_that_break_the_rules_are_refused_and_the_first_vote_stands(stack, admin, tmp_path):
    for i in range(3):
        resp = await ingest_http(stack, f"VOTE-{i}", dicom_bytes(tmp_path, f"VOTE-{i}", seed=i))
        assert resp.status_code in (200, 201)
    tokens = {r: await admin.create_user(r, "reviewer") for r in ("vr-1", "vr-2", "vr-3", "vr-outsider")}
    await eventually(lambda: _all_suggested(admin), "suggestions for the new studies")
    await admin.request_sampling({"n": 1, "readers_per_study": 3, "seed": 0}, panel=["vr-1", "vr-2", "vr-3"])
    reader = admin.as_user(tokens["vr-1"])
    await eventually(lambda: reader.next_assignment(), "an assignment for vr-1")
    a = await reader.next_assignment()
    votes_before = scalar(stack, "gateway", "SELECT count(*) FROM votes")

    async with httpx.AsyncClient(base_url=stack["gateway_url"]) as client:
        url = f"/api/v1/reviews/{a['assignment_id']}/vote"
        auth = {"Authorization": f"Bearer {tokens['vr-1']}"}
        assert_problem(await client.get("/api/v1/reviews/next"), 401, "bearer token")
        assert_problem(await client.get("/api/v1/progress", headers=auth), 403, "role")
        body = assert_problem(await client.post(url, headers=auth,
                                                json={"verdict": "disagree", "added_labels": ["dragon"]}),
                              422, "unknown label")
        assert body["unknown_labels"] == ["dragon"]
        assert_problem(await client.post(url, headers=auth, json={"verdict": "maybe"}), 422, "verdict")
        # Issue 12 §2: a verdict says what its corrections say (rules in the CXR taxonomy file).
        suggested = [s["label_id"] for s in a["suggested"]]
        addable = [label for label in a["label_ids"] if label not in suggested]
        verdict_cases = [
            ({"verdict": "agree_all", "added_labels": addable[:1]}, "agree_all means no correction"),
            ({"verdict": "agree_mostly"}, "agree_mostly means exactly 1 correction; this vote has 0"),
            ({"verdict": "agree_mostly", "added_labels": addable[:2]}, "this vote has 2 corrections"),
            ({"verdict": "disagree"}, "more than 1 correction, or a stated reason (comment)"),
            ({"verdict": "disagree", "added_labels": addable[:1], "comment": "  "}, "and no comment"),
        ]
        for vote, says in verdict_cases:
            problem = assert_problem(await client.post(url, headers=auth, json=vote), 422, says)
            assert problem["verdict"] == vote["verdict"] and "agree_mostly" in problem["verdict_rules"]
        outsider = {"Authorization": f"Bearer {tokens['vr-outsider']}"}
        theirs = assert_problem(await client.post(url, headers=outsider, json={"verdict": "agree_all"}),
                                404, "on your worklist")
        missing = assert_problem(await client.post("/api/v1/reviews/no-such-assignment/vote", headers=outsider,
                                                   json={"verdict": "agree_all"}), 404, "on your worklist")
        # Issue 11 item 16: another reader's assignment is indistinguishable from a missing one.
        assert theirs["detail"].replace(a["assignment_id"], "X") == missing["detail"].replace("no-such-assignment", "X")
        assert scalar(stack, "gateway", "SELECT count(*) FROM votes") == votes_before

        first = await client.post(url, headers={**auth, "Idempotency-Key": "k-1"}, json={"verdict": "agree_all"})
        assert first.status_code == 201
        replay = await client.post(url, headers={**auth, "Idempotency-Key": "k-1"}, json={"verdict": "agree_all"})
        assert replay.status_code == 200 and replay.json()["vote_id"] == first.json()["vote_id"]
        assert_problem(await client.post(url, headers={**auth, "Idempotency-Key": "k-2"},
                                         json={"verdict": "disagree", "comment": "changed my mind"}),
                       409, "already voted")
    assert scalar(stack, "gateway", "SELECT count(*) FROM votes") == votes_before + 1
    assert scalar(stack, "gateway", "SELECT count(*) FROM outbox WHERE topic = 'vote-cast'"
                                    " AND payload->>'assignment_id' = %s",
                  (a["assignment_id"],)) == 1


async def _all_suggested(api: Gateway) -> bool:
    f = (await api.progress())["funnel"]
    return f["suggested"] >= f["ingested"]
