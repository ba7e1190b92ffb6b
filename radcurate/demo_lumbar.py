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
from pathlib import Path

from radcurate.demo import print_step_cpu, run_funnel
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
    """The shared funnel with lumbar's plan and panel, plus the agreement figures of its card."""
    n, target = lumbar_plan(studies)
    figures = await run_funnel(state, data_dir, protocol=Protocol.LUMBAR, n=n, target=target, readers=READERS,
                               reader_prefix="mr-reader", release_id=f"lumbar-demo-{studies}-s{seed}", seed=seed,
                               out=out, timings=timings)
    card = json.loads((Path(figures["out"]) / "dataset_card.json").read_text())
    return {**figures, "mean_qwk": card["agreement"]["mean_qwk"],
            "point_mm": card["agreement"]["mean_point_distance_mm"]}


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
    print_step_cpu(f)
    print(f"release written to {f['out']} (competition layout: train.csv, train_label_coordinates.csv, "
          "train_series_descriptions.csv, train_images/)")
