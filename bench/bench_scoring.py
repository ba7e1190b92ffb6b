"""Time the holdout scorer: 1,000 bootstrap resamples of a CXR holdout (100 studies, 12 labels,
with ties) and of a lumbar holdout (100 studies x 25 rows). Moved here from a timed unit test:
speed is measured by benchmarks, and a timed test fails on a busy machine for no fault of the code.

Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_scoring.py [n_bootstrap]
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from services.common.protocols.cxr.scoring import Predictions, score_cxr
from services.common.protocols.lumbar.grid import CONDITIONS, LEVELS, Grade
from services.common.protocols.lumbar.scoring import row_id, score_lumbar_with_intervals

LABELS = [f"label_{j}" for j in range(12)]
STUDIES = [f"study-{i:03d}" for i in range(100)]
TARGET_S = 1.0


def _cxr(rng: np.random.Generator) -> tuple[dict, Predictions]:
    truth = {s: frozenset(lb for lb in LABELS if rng.random() < 0.3) for s in STUDIES}
    values = np.round(rng.random((len(STUDIES), len(LABELS))), 1)  # rounded: ties, as real files have
    return truth, Predictions(tuple(STUDIES), tuple(LABELS), values)


def _lumbar(rng: np.random.Generator) -> tuple[dict, dict]:
    grades = list(Grade)
    truth, sub = {}, {}
    for s in STUDIES:
        for c in CONDITIONS:
            for lv in LEVELS:
                rid = row_id(s, c, lv)
                truth[rid] = grades[rng.choice(3, p=[0.6, 0.25, 0.15])]
                p = rng.dirichlet(np.ones(3))
                sub[rid] = (float(p[0]), float(p[1]), float(p[2]))
    return truth, sub


def _time(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    rng = np.random.default_rng(0)
    truth, preds = _cxr(rng)
    cxr_s = _time(lambda: score_cxr(truth, preds, LABELS, n_bootstrap=n))
    lumbar_truth, lumbar_sub = _lumbar(rng)
    lumbar_s = _time(lambda: score_lumbar_with_intervals(lumbar_truth, lumbar_sub, n_bootstrap=n))
    load = os.getloadavg()[0]
    print(f"CXR holdout scored with {n} resamples (100 studies x 12 labels): {cxr_s:.3f} s"
          f"  target < {TARGET_S:.1f} s  ratio {cxr_s / TARGET_S:.2f}  (load {load:.1f})")
    print(f"lumbar holdout scored with {n} resamples (100 studies x 25 rows): {lumbar_s:.3f} s"
          f"  target < {TARGET_S:.1f} s  ratio {lumbar_s / TARGET_S:.2f}  (load {load:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
