"""Time `radcurate plan`'s campaign at the paper's scale: 1,000 sampled from 13,735, 3 of 17
readers, benchmark 200. The labelled archive is built once (or read from the cache) and timed
apart, since `radcurate plan` caches it after its first run.

Run: .venv/bin/python bench/bench_plan.py [archive_size] [seeds]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from radcurate.campaign import CampaignPlan, candidates, run_campaign, synth_pool

TARGET_SECONDS_PER_CAMPAIGN = 1.0  # "runs in seconds at the paper's scale", five seeds and more


def main() -> int:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 13_735
    seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        pool = synth_pool(size, 0, Path(cache))
        built = time.perf_counter() - started
        started = time.perf_counter()
        synth_pool(size, 0, Path(cache))
        loaded = time.perf_counter() - started
    started = time.perf_counter()
    pool_candidates = candidates(pool)
    prepared = time.perf_counter() - started
    timings, accepted = [], []
    for seed in range(seeds):
        started = time.perf_counter()
        outcome = run_campaign(pool, CampaignPlan(), seed, pool_candidates)
        timings.append(time.perf_counter() - started)
        accepted.append(outcome.accepted)
    per_campaign = sorted(timings)[len(timings) // 2]
    print(f"archive of {size}: labelled in {built:.1f}s, loaded from cache in {loaded:.1f}s,"
          f" candidates in {prepared:.2f}s")
    print(f"campaign (sample 1000, 3 of 17 readers, benchmark 200): median {per_campaign:.2f}s,"
          f" best {min(timings):.2f}s over {seeds} seeds; accepted {accepted}")
    print(f"ratio to target ({TARGET_SECONDS_PER_CAMPAIGN:.1f}s a campaign):"
          f" {per_campaign / TARGET_SECONDS_PER_CAMPAIGN:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
