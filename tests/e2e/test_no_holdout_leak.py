"""Every API endpoint, walked from the OpenAPI document as a reviewer who read holdout studies and
as an evaluator who scored against the holdout: no response reveals a holdout label.

What counts as a leak: a row of the holdout labels CSV, a holdout object key or bucket, or any
JSON object that names a holdout study together with a decision-like field (`labels`, `accepted`,
`decision`, `truth`...). A reader's own view of a study they read (the AI suggestion, the
discussion) is what they saw while reading, not the curated truth, and is not counted.
"""

from __future__ import annotations

import csv
import io
import re

import httpx
import pytest

from radcurate.demo import store_for
from tests.e2e.conftest import eventually, query
from tests.e2e.test_release_and_evaluation import _released, perfect_predictions, run_funnel

pytestmark = pytest.mark.e2e
ROTATES_OWN_TOKEN = {("post", "/api/v1/me/token")}
LEAK_KEYS = {"labels", "accepted", "decision", "decisions", "truth", "consensus", "final_labels", "holdout_labels",
             "benchmark_labels", "positive", "positives"}


def leaks(body: str, holdout_rows: list[str], holdout_ids: set[str], bucket: str) -> list[str]:
    found = [f"holdout CSV row {r!r}" for r in holdout_rows if r in body]
    found += [w for w in (bucket, "holdout/labels.csv", "holdout_truth") if w in body]
    try:
        found += _json_leaks(httpx.Response(200, content=body.encode()).json(), holdout_ids)
    except ValueError:
        pass
    return found


def _json_leaks(node, holdout_ids: set[str]) -> list[str]:
    if isinstance(node, list):
        return [f for item in node for f in _json_leaks(item, holdout_ids)]
    if not isinstance(node, dict):
        return []
    names_holdout = any(isinstance(v, str) and v in holdout_ids for v in node.values())
    found = [f"{k!r} beside a holdout study" for k in node if names_holdout and k in LEAK_KEYS]
    return found + [f for v in node.values() for f in _json_leaks(v, holdout_ids)]


def fill(path: str, values: dict[str, list[str]]) -> list[str]:
    """Every concrete path for a template, one per candidate value of its (single) parameter kind."""
    params = re.findall(r"{(\w+)}", path)
    if not params:
        return [path]
    out = [path]
    for name in params:
        out = [p.replace(f"{{{name}}}", v) for p in out for v in values.get(name, ["x"])]
    return out


async def walk(client: httpx.AsyncClient, token: str, spec: dict, values: dict) -> list[tuple[str, int, str]]:
    seen = []
    for template, ops in spec["paths"].items():
        for method in ops:
            if (method, template) in ROTATES_OWN_TOKEN:  # the walk would lock itself out and prove nothing after
                continue
            for path in fill(template, values):
                kw = {"json": {}} if method in ("post", "put", "patch") else {}
                resp = await client.request(method.upper(), path, headers={"Authorization": f"Bearer {token}"}, **kw)
                seen.append((f"{method.upper()} {path}", resp.status_code, resp.text))
    for extra in ("/api/v1/reviews?state=voted&limit=500", "/api/v1/reviews?state=expired"):
        resp = await client.get(extra, headers={"Authorization": f"Bearer {token}"})
        seen.append((f"GET {extra}", resp.status_code, resp.text))
    return seen


async def test_no_endpoint_shows_a_reviewer_or_an_evaluator_any_holdout_label(stack, tmp_path):
    api, readers = await run_funnel(stack, tmp_path)
    try:
        await api.request_release({"target_size": 24, "seed": 3}, "e2e-a")
        await eventually(lambda: _released(api, "e2e-a"), "the release")
        text, holdout = perfect_predictions(stack)
        evaluator = api.as_user(await api.create_user("team-leak", "evaluator", team="team-leak"))
        scored = (await evaluator.request("POST", "/api/v1/evaluations", params={"release_id": "e2e-a"},
                                          content=text.encode(), headers={"Content-Type": "text/csv"})).json()
        report_id = (await api.request("GET", "/api/v1/reports/agreement")).json()["report_id"]
    finally:
        await api.aclose()
    holdout_ids = set(holdout)
    reader_id, = query(stack, "gateway", "SELECT reader_id FROM assignments WHERE study_id = ANY(%s)"
                                         " GROUP BY 1 ORDER BY count(*) DESC LIMIT 1", (list(holdout_ids),))[0]
    reviewer = next(r for r in readers if r.user_id == reader_id)
    read = [r[0] for r in query(stack, "gateway", "SELECT study_id FROM assignments WHERE reader_id = %s"
                                                  " AND study_id = ANY(%s)", (reader_id, list(holdout_ids)))]
    assignments = [r[0] for r in query(stack, "gateway", "SELECT assignment_id FROM assignments WHERE reader_id = %s"
                                                         " AND study_id = ANY(%s)", (reader_id, read))]
    run_id = query(stack, "gateway", "SELECT run_id FROM sampling_runs LIMIT 1")[0][0]
    values = {"study_id": read[:3], "assignment_id": assignments[:3], "release_id": ["e2e-a"], "run_id": [run_id],
              "evaluation_id": [scored["evaluation_id"]], "report_id": [report_id], "user_id": [reader_id, "team-leak"]}
    csv_text = store_for(stack).get_bytes(stack["buckets"]["holdout"], "releases/e2e-a/holdout/labels.csv").decode()
    holdout_rows = [",".join(r) for r in list(csv.reader(io.StringIO(csv_text)))[1:]]

    async with httpx.AsyncClient(base_url=stack["gateway_url"], timeout=60) as client:
        spec = (await client.get("/openapi.json")).json()
        walks = {who: await walk(client, token, spec, values)
                 for who, token in (("reviewer", reviewer.token), ("evaluator", evaluator.token))}
    for who, seen in walks.items():
        assert any(code == 200 for _, code, _ in seen), who
        problems = {what: leaks(body, holdout_rows, holdout_ids, stack["buckets"]["holdout"]) for what, _, body in seen}
        assert not {k: v for k, v in problems.items() if v}, who
    # Issue 11 §12: once released, a holdout study is gone for its readers (view, image, DICOM links,
    # discussion all 404, as for a study never on their worklist); studies released openly stay.
    for part in ("", "/image", "/dicom", "/discussion"):
        assert any(what == f"GET /api/v1/studies/{read[0]}{part}" and code == 404
                   for what, code, _ in walks["reviewer"]), part
    public = store_for(stack).get_bytes(stack["buckets"]["public"], "releases/e2e-a/labels.csv").decode()
    released = [r[0] for r in list(csv.reader(io.StringIO(public)))[1:]]
    open_reader, open_study = query(stack, "gateway", "SELECT reader_id, study_id FROM assignments"
                                                      " WHERE status = 'voted'"
                                                      " AND study_id = ANY(%s) ORDER BY 1, 2 LIMIT 1", (released,))[0]
    token = next(r for r in readers if r.user_id == open_reader).token
    async with httpx.AsyncClient(base_url=stack["gateway_url"], timeout=60) as client:
        for part in ("", "/image", "/dicom", "/discussion"):
            resp = await client.get(f"/api/v1/studies/{open_study}{part}", headers={"Authorization": f"Bearer {token}"})
            assert resp.status_code == 200, (part, resp.text)


def test_the_detector_sees_each_kind_of_leak():
    ids = {"H1"}
    assert leaks('{"study_id": "H1", "labels": ["cardiomegaly"]}', [], ids, "hb")
    assert leaks('[{"x": {"id": "H1", "accepted": true}}]', [], ids, "hb")
    assert leaks("H1,0,1,0", ["H1,0,1,0"], ids, "hb") and leaks("s3://hb/k", [], ids, "hb")
    assert not leaks('{"study_id": "H1", "suggested": []}', [], ids, "hb")
