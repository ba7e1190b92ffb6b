"""The lumbar grading protocol end to end through all five services: synthetic MRI studies →
grade-grid suggestions → strata sampling → simulated graders voting over HTTP → per-cell
decisions → a patient-level release in the competition layout → a scored holdout evaluation;
then the reviewer page grading one study in headless Chromium (same stack, last)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from radcurate.client import Gateway, GatewayError
from radcurate.demo import download_release, ingest_folder, store_for
from radcurate.simulate import load_truth, register_panel, run_panel
from radcurate.synth.lumbar import synth_lumbar
from services.common.contracts import Protocol
from services.common.protocols.lumbar.competition import TRAIN_COLUMNS, read_split
from services.common.protocols.lumbar.grid import CELL_IDS, CONDITIONS, LEVELS
from tests.e2e.conftest import at_least, eventually, query, scalar, wait_for_js

pytestmark = pytest.mark.e2e
LUMBAR = Protocol.LUMBAR.value
STUDIES, SAMPLED, TARGET = 30, 24, 16


@pytest.fixture(scope="module")
def lumbar_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("lumbar")
    synth_lumbar(STUDIES, seed=5, out_dir=out)
    return out


async def _released(api: Gateway, release_id: str) -> bool:
    return (await api.release(release_id))["status"] == "released"


async def grade_sample(stack, admin: Gateway, data) -> None:
    summary = await ingest_folder(stack, data, protocol=Protocol.LUMBAR)
    assert summary.ingested == STUDIES and not summary.rejected
    await eventually(lambda: at_least(admin, "suggested", STUDIES, LUMBAR), "a grade grid for every study")
    readers = await register_panel(admin, 4, seed=1, prefix="mr")
    await admin.request_sampling({"n": SAMPLED, "readers_per_study": 3, "seed": 2}, [r.user_id for r in readers],
                                 LUMBAR)
    await eventually(lambda: at_least(admin, "assignments", 3 * SAMPLED, LUMBAR), "assignments")
    task = await admin.as_user(readers[0].token).next_assignment()
    assert task["protocol"] == LUMBAR and [c["cell_id"] for c in task["grading"]] == list(CELL_IDS)
    assert await run_panel(admin, readers, load_truth(data / "truth.jsonl")) == 3 * SAMPLED
    await eventually(lambda: at_least(admin, "decided", SAMPLED, LUMBAR), "a decision for every sampled study", 180)


def check_sampling_and_decisions(stack) -> None:
    strata = {r[0] for r in query(stack, "sampler", "SELECT stratum FROM sampled")}
    assert strata <= {"any_severe", "any_moderate", "all_normal_mild"} and "any_severe" in strata
    cells = query(stack, "consensus", "SELECT cells FROM decisions")
    assert len(cells) == SAMPLED and all(len(c[0]) == 25 for c in cells)
    points = [cell["point"] for (c,) in cells for cell in c if cell["point"]]
    assert len(points) > SAMPLED * 20 and all(p["x"] >= 0 and p["instance_number"] >= 1 for p in points)
    assert scalar(stack, "consensus", "SELECT count(*) FROM votes WHERE judgement->'grades' IS NULL") == 0


async def check_report(admin: Gateway) -> None:
    report = (await admin.request("GET", "/api/v1/reports/agreement", params={"wait": 30, "protocol": LUMBAR})).json()
    assert report["status"] == "ready" and report["studies"] == SAMPLED
    assert set(report["qwk_by_condition"]) == {c.value for c in CONDITIONS}
    assert set(report["qwk_by_level"]) == {lv.value for lv in LEVELS}
    assert 0.3 < report["mean_qwk"] <= 1 and 0 < report["mean_point_distance_mm"] < 15


async def release_in_competition_layout(stack, admin: Gateway, data, tmp_path) -> dict:
    await admin.request_release({"target_size": TARGET, "seed": 1}, "lumbar-e2e", protocol=LUMBAR)
    await eventually(lambda: _released(admin, "lumbar-e2e"), "the lumbar release", 180)
    release = await admin.release("lumbar-e2e")
    public = download_release(stack, release, tmp_path / "out")
    holdout = tmp_path / "holdout"
    store, bucket = store_for(stack), stack["buckets"]["holdout"]
    for name in ("train.csv", "train_label_coordinates.csv", "train_series_descriptions.csv"):
        holdout.mkdir(exist_ok=True)
        (holdout / name).write_bytes(store.get_bytes(bucket, f"releases/lumbar-e2e/holdout/{name}"))
    header = next(csv.reader(io.StringIO((public / "train.csv").read_text())))
    assert tuple(header) == TRAIN_COLUMNS
    released, held = read_split(public), read_split(holdout)
    assert len(released) == release["released_count"] and len(held) == release["holdout_count"] > 0
    assert all(len(s.grades) == 25 and len(s.series) == 3 and s.coordinates for s in released + held)
    assert all(len(files) >= 12 for s in released for files in s.images.values())
    patients = {json.loads(line)["study_id"]: json.loads(line)["patient_id"]
                for line in (data / "truth.jsonl").read_text().splitlines()}
    assert not {patients[s.study_id] for s in released} & {patients[s.study_id] for s in held}
    return {"holdout_csv": (holdout / "train.csv").read_text(), "holdout_ids": [s.study_id for s in held]}


def submission(holdout_csv: str) -> str:
    """Confident predictions of the holdout's own grades (a near-perfect model)."""
    rows = list(csv.DictReader(io.StringIO(holdout_csv)))
    lines = ["row_id,normal_mild,moderate,severe"]
    for row in rows:
        for cell in CELL_IDS:
            p = {"Normal/Mild": "0.9,0.05,0.05", "Moderate": "0.05,0.9,0.05", "Severe": "0.05,0.05,0.9"}
            lines.append(f"{row['study_id']}_{cell},{p.get(row[cell], '0.34,0.33,0.33')}")
    return "\n".join(lines) + "\n"


async def scored_evaluation(admin: Gateway, holdout_csv: str) -> None:
    evaluator = admin.as_user(await admin.create_user("lumbar-team", "evaluator", team="lumbar-team"))
    resp = await evaluator.request("POST", "/api/v1/evaluations", params={"release_id": "lumbar-e2e"},
                                   content=submission(holdout_csv).encode(), headers={"Content-Type": "text/csv"})
    result = resp.json()
    if result.get("status") == "pending":
        await eventually(lambda: _scored(evaluator, result["evaluation_id"]), "the evaluation")
        result = (await evaluator.request("GET", f"/api/v1/evaluations/{result['evaluation_id']}")).json()
    assert result["status"] == "scored", result
    metrics = result["metrics"]  # the release's policy: the rounded log loss only, no per-group losses
    assert "spinal" not in metrics and 0 < metrics["score"] < 0.5 and metrics["score"] == round(metrics["score"], 2)
    final = await evaluator.request("POST", "/api/v1/evaluations", params={"release_id": "lumbar-e2e", "final": "true"},
                                    content=submission(holdout_csv).encode(), headers={"Content-Type": "text/csv"})
    result = final.json()
    if result.get("status") == "pending":
        await eventually(lambda: _scored(evaluator, result["evaluation_id"]), "the final evaluation")
        result = (await evaluator.request("GET", f"/api/v1/evaluations/{result['evaluation_id']}")).json()
    assert result["final"] is True and set(result["metrics"]) >= {"score", "spinal", "foraminal", "subarticular",
                                                                  "any_severe_spinal"}
    low, high = result["metrics"]["ci95"]["score"]  # the holdout score comes with its bootstrap interval
    assert low <= result["metrics"]["score"] <= high


async def _scored(evaluator: Gateway, evaluation_id: str) -> bool:
    return (await evaluator.request("GET", f"/api/v1/evaluations/{evaluation_id}")).json()["status"] != "pending"


async def test_lumbar_studies_become_graded_decided_released_in_competition_layout_and_scored(
        stack, admin, lumbar_data, tmp_path):
    await grade_sample(stack, admin, lumbar_data)
    check_sampling_and_decisions(stack)
    await check_report(admin)
    split = await release_in_competition_layout(stack, admin, lumbar_data, tmp_path)
    await scored_evaluation(admin, split["holdout_csv"])


async def test_a_lumbar_vote_must_grade_every_known_cell_on_the_studys_own_instances(stack, admin):
    reader = admin.as_user(await admin.create_user("mr-check", "reviewer"))
    await admin.request_sampling({"n": 1, "readers_per_study": 1, "seed": 0}, ["mr-check"], LUMBAR)
    await eventually(lambda: _has_open(reader), "an assignment for mr-check")
    task = await reader.next_assignment()
    grid = [{"cell_id": c["cell_id"], "grade": c["grade"]} for c in task["grading"]]
    cases = [(grid[:-1], "missing"), ([*grid[:-1], {**grid[-1], "cell_id": "tail_l4_l5"}], "unknown cell"),
             ([{**grid[0], "grade": "Awful"}, *grid[1:]], "unknown grade"),
             ([{**grid[0], "point": {"series_instance_uid": "1.2.3", "instance_number": 1, "x": 1, "y": 1}},
               *grid[1:]], "does not have")]
    for grades, message in cases:
        with pytest.raises(GatewayError) as err:
            await reader.vote(task["assignment_id"], {"grades": grades})
        assert err.value.status == 422 and message in err.value.problem["detail"]
    with pytest.raises(GatewayError) as err:
        await reader.vote(task["assignment_id"], {"verdict": "agree_all"})
    assert err.value.status == 422
    first = await reader.vote(task["assignment_id"], {"grades": grid}, idempotency_key="k-1")
    again = await reader.vote(task["assignment_id"], {"grades": grid}, idempotency_key="k-1")
    assert first["vote_id"] == again["vote_id"] and len(again["grades"]) == 25


async def _has_open(reader: Gateway) -> bool:
    return len(await reader.worklist()) > 0


# --- the reviewer web page ----------------------------------------------------------------

@pytest.mark.browser
async def test_a_reader_grades_one_lumbar_study_in_the_page(stack, admin, browser):
    token = await admin.create_user("mr-page", "reviewer")
    reader = admin.as_user(token)
    await admin.request_sampling({"n": 1, "readers_per_study": 1, "seed": 0}, ["mr-page"], LUMBAR)
    await eventually(lambda: _has_open(reader), "an assignment for mr-page")
    task = await reader.next_assignment()
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    await page.goto(stack["gateway_url"] + "/")
    await page.get_by_label("Your access token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await wait_for_js(page, "window.__rc && window.__rc.ready")
    await page.locator("#grid").wait_for(state="visible")
    assert await page.locator("#grid [data-cell]").count() == 25
    await wait_for_js(page, "document.getElementById('image').naturalWidth > 0")

    cell = "spinal_canal_stenosis_l4_l5"
    before = next(c["grade"] for c in task["grading"] if c["cell_id"] == cell)
    target = "Severe" if before != "Severe" else "Moderate"
    await page.locator(f'[data-cell="{cell}"] button[data-grade="{target}"]').click()
    await page.keyboard.press("ArrowDown")  # scroll one instance further through the series
    instance = await page.evaluate("window.__rc.instance")
    await page.locator(f'[data-cell="{cell}"] .point').click()
    box = await page.locator("#image").bounding_box()
    await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await page.get_by_label("Comment").fill("L4-5 looks severe")

    # held back for undo: U puts the grid back as the reader left it, and nothing was sent
    await page.get_by_role("button", name="Submit grades").click()
    await page.locator("#undo-box").wait_for(state="visible")
    assert "grades" in await page.locator("#undo-text").inner_text()
    await page.keyboard.press("u")
    await page.locator(f'[data-cell="{cell}"] button[data-grade="{target}"][aria-pressed="true"]').wait_for()
    assert await page.locator(f'[data-cell="{cell}"] .point').get_attribute("data-placed") == "true"
    assert await page.input_value("#comment") == "L4-5 looks severe"
    assert scalar(stack, "gateway", "SELECT count(*) FROM votes WHERE assignment_id = %s",
                  (task["assignment_id"],)) == 0

    await page.evaluate("window.__rc.graceMs = 300")
    await page.get_by_role("button", name="Submit grades").click()
    await wait_for_js(page, "window.__rc.votes === 1")

    [(grades, comment)] = query(stack, "gateway", "SELECT judgement->'grades', comment FROM votes"
                                " WHERE assignment_id = %s", (task["assignment_id"],))
    assert comment == "L4-5 looks severe"
    graded = {g["cell_id"]: g for g in grades}
    assert len(graded) == 25 and graded[cell]["grade"] == target
    point = graded[cell]["point"]
    assert point["instance_number"] == instance and point["series_instance_uid"]
    assert 0 < point["x"] < 96 and 0 < point["y"] < 96  # image pixels of a 96x96 sagittal, not screen pixels


# --- adjudication of disputed cells (issue 12 §3) -------------------------------------------

DISPUTED = "spinal_canal_stenosis_l4_l5"


def _decided_count(stack, study_ids: list[str]) -> int:
    return scalar(stack, "consensus", "SELECT count(*) FROM decisions WHERE study_id = ANY(%s)", (study_ids,))


async def test_a_curator_grades_the_disputed_cell_and_the_release_carries_that_grade(stack, admin, lumbar_data):
    """Three readers two grades apart at one cell hold a study; the curator sets that cell's grade
    and point; consensus records it beside the rule's decision and the release has that grade."""
    await ingest_folder(stack, lumbar_data, protocol=Protocol.LUMBAR)  # duplicates when the funnel ran first
    await eventually(lambda: at_least(admin, "suggested", STUDIES, LUMBAR), "a grade grid for every study")
    names = ("adj-1", "adj-2", "adj-3")
    readers = [admin.as_user(await admin.create_user(n, "reviewer")) for n in names]
    await admin.request_sampling({"n": 2, "readers_per_study": 3, "seed": 7}, list(names), LUMBAR)
    await eventually(lambda: _open_count(readers[2], 2), "two assignments for each adjudication reader")
    tasks = sorted(await readers[0].worklist(), key=lambda a: a["study_id"])
    held, clear = tasks[0]["study_id"], tasks[1]["study_id"]
    for reader, disputed_grade in zip(readers, ("Normal/Mild", "Moderate", "Severe"), strict=True):
        for a in await reader.worklist():
            grid = _suggested_grid(a)
            if a["study_id"] == held:
                grid = [{**g, "grade": disputed_grade} if g["cell_id"] == DISPUTED else g for g in grid]
            await reader.vote(a["assignment_id"], {"grades": grid})
    await eventually(lambda: _decided_count(stack, [held, clear]) == 2, "decisions on both studies")
    await eventually(lambda: scalar(stack, "gateway", "SELECT count(*) FROM decisions WHERE study_id = %s", (held,)),
                     "the gateway to learn of the held study's decision")
    [(accepted, rule_cells)] = query(stack, "consensus", "SELECT accepted, cells FROM decisions WHERE study_id = %s",
                                     (held,))
    rule_cell = next(c for c in rule_cells if c["cell_id"] == DISPUTED)
    assert not accepted and rule_cell["adjudicate"] and rule_cell["grade"] == "Moderate"  # the median nobody chose

    series, instance = query(stack, "gateway", "SELECT series_instance_uid, instance_number FROM study_objects"
                             " WHERE study_id = %s ORDER BY 1, 2 LIMIT 1", (held,))[0]
    point = {"series_instance_uid": series, "instance_number": instance, "x": 30.5, "y": 41.0}
    for body, says in (({"cells": [{"cell_id": "tail_l4_l5", "grade": "Severe"}]}, "unknown cell"),
                       ({"labels": [DISPUTED]}, "send no `labels`"),
                       ({"cells": [{"cell_id": DISPUTED, "grade": "Severe",
                                    "point": {**point, "instance_number": 999}}]},
                        "which this study does not have")):
        with pytest.raises(GatewayError) as err:
            await admin.request("POST", "/api/v1/adjudications", json={"study_id": held, "accepted": True, **body})
        assert err.value.status == 422 and says in err.value.problem["detail"], err.value.problem
    assert scalar(stack, "gateway", "SELECT count(*) FROM adjudications WHERE study_id = %s", (held,)) == 0

    resp = await admin.request("POST", "/api/v1/adjudications", json={
        "study_id": held, "accepted": True, "note": "severe on the axial",
        "cells": [{"cell_id": DISPUTED, "grade": "Severe", "point": point}]})
    assert resp.status_code == 202
    await eventually(lambda: scalar(stack, "gateway", "SELECT count(*) FROM adjudications WHERE study_id = %s"
                                    " AND applied_at IS NOT NULL", (held,)), "the adjudication to be applied")
    [(curator, cells, previous)] = query(stack, "consensus", "SELECT curator_id, cells, previous_accepted"
                                         " FROM adjudications WHERE study_id = %s", (held,))
    ruled = {c["cell_id"]: c for c in cells}
    assert curator == "admin" and previous is False and len(cells) == 25
    assert ruled[DISPUTED] == {"cell_id": DISPUTED, "grade": "Severe", "method": "adjudicated", "adjudicate": False,
                               "point": point}
    # Beside, never over: the rule's decision is as it was; the effective one is the curator's.
    assert query(stack, "consensus", "SELECT accepted, cells FROM decisions WHERE study_id = %s",
                 (held,)) == [(False, rule_cells)]
    assert query(stack, "consensus", "SELECT accepted, adjudicator FROM effective_decisions WHERE study_id = %s",
                 (held,)) == [(True, "admin")]

    await admin.request_release({"target_size": 200, "seed": 1}, "lumbar-adj", protocol=LUMBAR)
    await eventually(lambda: _released(admin, "lumbar-adj"), "the release with the adjudicated study", 180)
    store, rows, points = store_for(stack), {}, []
    for bucket, prefix in ((stack["buckets"]["public"], "releases/lumbar-adj"),
                           (stack["buckets"]["holdout"], "releases/lumbar-adj/holdout")):
        rows.update({r["study_id"]: r for r in csv.DictReader(io.StringIO(
            store.get_bytes(bucket, f"{prefix}/train.csv").decode()))})
        points += [r for r in csv.DictReader(io.StringIO(
            store.get_bytes(bucket, f"{prefix}/train_label_coordinates.csv").decode())) if r["study_id"] == held]
    assert rows[held][DISPUTED] == "Severe" and clear in rows
    provenance = {}
    for bucket, prefix in ((stack["buckets"]["public"], "releases/lumbar-adj"),
                           (stack["buckets"]["holdout"], "releases/lumbar-adj/holdout")):
        provenance.update({r["study_id"]: r for r in csv.DictReader(io.StringIO(
            store.get_bytes(bucket, f"{prefix}/provenance.csv").decode()))})
    assert set(provenance) == set(rows)
    assert provenance[held] == {"study_id": held, "decision_path": "adjudicated",
                                "votes": "graded=3;adjudicated_cells=1",
                                "rule": "lumbar-majority-median", "rule_version": "1", "adjudicator": "admin"}
    assert provenance[clear]["decision_path"] == "rule" and provenance[clear]["adjudicator"] == ""
    card = json.loads(store.get_bytes(stack["buckets"]["public"], "releases/lumbar-adj/dataset_card.json"))
    counts = card["provenance"]
    assert counts["released"]["adjudicated"] + counts["holdout"]["adjudicated"] == 1
    assert sum(counts["released"].values()) + sum(counts["holdout"].values()) == len(rows)
    spinal_l4 = [p for p in points if p["condition"] == "Spinal Canal Stenosis" and p["level"] == "L4/L5"]
    assert [(p["series_id"], int(p["instance_number"]), float(p["x"]), float(p["y"])) for p in spinal_l4] == [
        (series, instance, 30.5, 41.0)]


def _suggested_grid(task: dict) -> list[dict]:
    return [{"cell_id": c["cell_id"], "grade": c["grade"]} for c in task["grading"]]


async def _open_count(reader: Gateway, n: int) -> bool:
    return len(await reader.worklist()) >= n
