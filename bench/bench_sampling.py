"""Time `draw_sample` on a synthetic pool at production scale (1,000 from 100,000).

Run: .venv/bin/python bench/bench_sampling.py [pool_size] [n]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from services.common.contracts import SamplingPlan
from services.common.protocols.kit.sampling import Candidate, draw_sample

LABELS = [
    "atelectasis", "cardiomegaly", "consolidation", "pulmonary_edema", "pleural_effusion",
    "pneumothorax", "nodule_mass", "interstitial_fibrosis", "emphysema", "fracture",
    "mediastinal_hilar", "support_devices",
]
PREVALENCE = [0.15, 0.12, 0.08, 0.07, 0.14, 0.02, 0.04, 0.015, 0.03, 0.005, 0.01, 0.25]


def synthetic_pool(size: int, seed: int = 0) -> list[Candidate]:
    """A pool shaped like a chest radiograph archive: a few common labels, a long rare tail."""
    rng = np.random.default_rng(seed)
    has = rng.random((size, len(LABELS))) < np.array(PREVALENCE)
    hedged = rng.random((size, len(LABELS))) < 0.1
    confidence = rng.uniform(0.5, 1.0, size)
    unmapped = rng.poisson(0.3, size)
    disagree = rng.random(size) < 0.08
    pool = []
    for i in range(size):
        labels = frozenset(LABELS[j] for j in np.flatnonzero(has[i]))
        uncertain = frozenset(LABELS[j] for j in np.flatnonzero(has[i] & hedged[i]))
        pool.append(Candidate(
            f"S{i:07d}", f"P{i // 3:07d}", labels, uncertain,
            float(confidence[i]) if labels else None, int(unmapped[i]), bool(disagree[i]),
        ))
    return pool


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000
    pool = synthetic_pool(size)
    plan = SamplingPlan(n=n, seed=7)
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        result = draw_sample(pool, plan, LABELS)
        timings.append(time.perf_counter() - start)
    print(f"draw_sample: {n} from {size} candidates: best {min(timings):.3f}s, "
          f"median {sorted(timings)[2]:.3f}s over 5 runs")
    print("tiers:", {t.value: k for t, k in result.tier_counts.items()})
    print("labels:", result.label_counts)
    print("unmet:", result.unmet_quotas)


if __name__ == "__main__":
    main()
