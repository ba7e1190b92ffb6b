"""The sampler's memory for one sampling run over a large pool (issue 15 §6: peak RSS < 300 MB).

A throwaway Postgres gets the sampler's schema and N candidates: real labels-suggested events
(RADCURATE_SCALE_SUGGESTIONS, a JSON-lines file bench/scale_stats.py writes from a funnel run's
`sampler.candidates`; each copied under new study ids). Then, in a fresh Python process each (so
one run's memory does not hide the next's), `handlers.run_sampling` draws a demo-sized sample
(200 studies, 3 readers each) from the whole pool, and the process prints its resident memory
before and at its peak (VmRSS / VmHWM); with RADCURATE_BENCH_TRACEMALLOC=1 also tracemalloc's peak
of Python allocations (RSS is then inflated by tracemalloc's own bookkeeping).

  PYTHONPATH=$PWD .venv/bin/python bench/scale_sampler_memory.py            # 13,735 candidates
  RADCURATE_BENCH_STUDIES=41205 PYTHONPATH=$PWD .venv/bin/python bench/scale_sampler_memory.py
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import psycopg

import services
from radcurate.stack import postgres
from radcurate.stack.procs import stop
from services.common.contracts import Protocol, SamplingRequested
from services.common.contracts.sampling import SamplingPlan
from services.common.db import apply_migrations, migration_files, open_pool

# tracemalloc's bookkeeping costs memory of its own: RSS figures are taken without it.
TRACE = os.environ.get("RADCURATE_BENCH_TRACEMALLOC", "0") == "1"
SUGGESTIONS = Path(os.environ.get("RADCURATE_SCALE_SUGGESTIONS", "/tmp/scale-suggestions.jsonl"))


def memory_mib() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def fill(dsn: str, n: int) -> None:
    """N candidates, each one of the sample suggestions under a new study and patient id."""
    samples = [json.loads(line) for line in SUGGESTIONS.read_text().splitlines() if line.strip()]
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy("COPY candidates (study_id, patient_id, protocol, taxonomy_version, suggestion)"
                      " FROM STDIN") as cp:
            for i in range(n):
                s = dict(samples[i % len(samples)])
                s["study_id"], s["patient_id"] = f"B{i:07d}", f"P{i:07d}"
                cp.write_row((s["study_id"], s["patient_id"], s["protocol"], s["taxonomy_version"], json.dumps(s)))
        conn.commit()


async def one_run(dsn: str) -> None:
    from services.sampler.handlers import run_sampling

    if TRACE:
        tracemalloc.start()
    before = memory_mib()
    pool = await open_pool(dsn)
    cmd = SamplingRequested(study_id="run-1", run_id="run-1", protocol=Protocol.CXR,
                            panel=[f"reader-{i}" for i in range(10)],
                            plan=SamplingPlan(n=200, readers_per_study=3, seed=1))
    started, cpu = time.perf_counter(), time.process_time()
    try:
        async with pool.connection() as conn:
            async with conn.transaction(force_rollback=True):  # measure only: the next run draws the same pool
                events = await run_sampling(conn, cmd)
    finally:
        await pool.close()
    _, py_peak = tracemalloc.get_traced_memory()
    after = memory_mib()
    print(json.dumps({"events": len(events), "seconds": time.perf_counter() - started,
                      "cpu_s": time.process_time() - cpu, "rss_before": before["VmRSS"],
                      "rss_peak": after["VmHWM"], "python_peak_mib": py_peak / 2**20}))


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(one_run(sys.argv[2]))
        return 0
    n = int(os.environ.get("RADCURATE_BENCH_STUDIES", "13735"))
    runs = int(os.environ.get("RADCURATE_BENCH_RUNS", "2"))
    Path(".radcurate").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-sampler-mem-", dir=Path(".radcurate").resolve()) as home:
        pg = postgres.start(Path(home) / "pg" / "data", Path(home) / "postgres.log")
        try:
            dsn = postgres.bootstrap(pg["admin_dsn"], ["sampler"])["sampler"]
            apply_migrations(dsn, migration_files(Path(services.__file__).parent / "sampler"))
            fill(dsn, n)
            for _ in range(runs):
                done = subprocess.run([sys.executable, __file__, "--child", dsn], capture_output=True, text=True)
                if done.returncode:
                    print(done.stderr[-3000:])
                    return 1
                fig = json.loads(done.stdout.strip().splitlines()[-1])
                one, five, _ = os.getloadavg()
                print(f"sampling run over {n:,} candidates ({fig['events']} events): RSS {fig['rss_before']:.0f}"
                      f" MiB before, peak {fig['rss_peak']:.0f} MiB;"
                      + (f" Python allocations' peak {fig['python_peak_mib']:.0f} MiB (tracemalloc);" if TRACE else "")
                      + f" {fig['seconds']:.1f}s, {fig['cpu_s']:.1f} s"
                      f" CPU [load {one:.2f}/{five:.2f}]", flush=True)
        finally:
            stop(pg, sig=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
