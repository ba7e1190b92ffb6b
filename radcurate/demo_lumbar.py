"""`make demo PROTOCOL=lumbar`: the lumbar grading funnel, small, on the same services as CXR.

Synthetic lumbar MRI studies (three series each) → ingest → extractor + mapper (a 25-cell grade
grid per report) → sampler (grade strata, rare cells first) → simulated readers grade every cell
and place points through the HTTP API → consensus (majority, else median; points averaged in mm)
→ a patient-level split released in the RSNA 2024 competition layout. Every figure is counted
from what the services recorded.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from radcurate.client import Gateway
from radcurate.demo import download_release, ingest_folder, wait_for
from radcurate.simulate import load_truth, register_panel, run_panel
from radcurate.stack.procs import StackError
from services.common.contracts import Protocol

LUMBAR = Protocol.LUMBAR.value
READERS = 6


def lumbar_plan(studies: int) -> tuple[int, int]:
    """(studies sampled, benchmark size): three quarters sampled, most of those kept."""
    n = max(10, round(0.75 * studies))
    return n, max(4, round(0.6 * n))


def synth_lumbar_data(studies: int, seed: int, data_dir: Path) -> None:
    marker = data_dir / "synth.json"
    wanted = {"studies": studies, "seed": seed, "protocol": LUMBAR}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return
    from radcurate.synth.lumbar import synth_lumbar

    shutil.rmtree(data_dir, ignore_errors=True)
    synth_lumbar(studies, seed, data_dir)
    marker.write_text(json.dumps(wanted))


async def lumbar_funnel(state: dict, data_dir: Path, studies: int, seed: int, out: Path, timings: dict) -> dict:
    """Ingest → label → sample → grade → decide → release, timing each step."""
    t = time.perf_counter()
    summary = await ingest_folder(state, data_dir, protocol=Protocol.LUMBAR)
    timings["ingest"] = time.perf_counter() - t
    if summary.rejected:
        raise StackError(f"{len(summary.rejected)} studies rejected at ingest, e.g. {summary.rejected[0]}")
    api = Gateway(state["gateway_url"], state["admin_token"])
    try:
        return await _review_and_release(api, state, data_dir, summary.ingested, studies, seed, out, timings)
    finally:
        await api.aclose()


async def _review_and_release(api: Gateway, state: dict, data_dir: Path, ingested: int, studies: int, seed: int,
                              out: Path, timings: dict) -> dict:
    t = time.perf_counter()
    await wait_for("grade grids for every study", lambda: _at_least(api, "suggested", ingested))
    timings["extract + map"] = time.perf_counter() - t
    n, target = lumbar_plan(studies)
    t = time.perf_counter()
    readers = await register_panel(api, READERS, seed, prefix="mr-reader")
    await api.request_sampling({"n": n, "readers_per_study": 3, "seed": seed}, protocol=LUMBAR)
    await wait_for("assignments", lambda: _at_least(api, "assignments", 3 * n))
    timings["sample + assign"] = time.perf_counter() - t
    t = time.perf_counter()
    votes = await run_panel(api, readers, load_truth(data_dir / "truth.jsonl"))
    await wait_for("decisions", lambda: _at_least(api, "decided", n))
    timings["grade + consensus"] = time.perf_counter() - t
    t = time.perf_counter()
    release_id = f"lumbar-demo-{studies}-s{seed}"
    await api.request_release({"target_size": target, "seed": seed}, release_id, protocol=LUMBAR)
    await wait_for("the release", lambda: _released(api, release_id))
    release = await api.release(release_id)
    target_dir = download_release(state, release, out)
    timings["select + release"] = time.perf_counter() - t
    funnel = (await api.progress(LUMBAR))["funnel"]
    card = json.loads((target_dir / "dataset_card.json").read_text())
    return {**funnel, "votes": votes, "readers": len(readers), "released": release["released_count"],
            "holdout": release["holdout_count"], "selected": release["released_count"] + release["holdout_count"],
            "mean_qwk": card["agreement"]["mean_qwk"], "point_mm": card["agreement"]["mean_point_distance_mm"],
            "out": str(target_dir)}


async def _at_least(api: Gateway, key: str, value: int) -> bool:
    return (await api.progress(LUMBAR))["funnel"][key] >= value


async def _released(api: Gateway, release_id: str) -> bool:
    return (await api.release(release_id))["status"] == "released"


def print_lumbar_funnel(f: dict, timings: dict) -> None:
    rows = [("lumbar MRI studies ingested (3 series each)", f["ingested"]),
            ("studies with a suggested 25-cell grade grid", f["suggested"]),
            ("studies sampled for grading", f["sampled"]),
            ("readers in the panel", f["readers"]),
            ("reads (3 readers per study, 25 cells each)", f["votes"]),
            ("studies decided", f["decided"]),
            ("accepted (no cell two grades apart)", f["accepted"]),
            ("benchmark size", f["selected"]), ("released", f["released"]), ("holdout", f["holdout"])]
    print()
    print(f"{'step':<46} {'this run':>9}")
    print("-" * 56)
    for name, ours in rows:
        print(f"{name:<46} {ours:>9,}")
    qwk = "n/a" if f["mean_qwk"] is None else f"{f['mean_qwk']:.3f}"
    mm = "n/a" if f["point_mm"] is None else f"{f['point_mm']:.1f} mm"
    print(f"\nreader agreement: mean QWK {qwk}, mean point distance {mm}")
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    print(f"release written to {f['out']} (competition layout: train.csv, train_label_coordinates.csv, "
          "train_series_descriptions.csv, train_images/)")
