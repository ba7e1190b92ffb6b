"""Ingest alone: synthetic CXR studies through the gateway's batch ingest API into Postgres and S3.

The local stack with the gateway as its only service (its outbox relay included, so the
report-ingested events reach the broker), and the demo's own client (`ingest_folder`). Prints the
rate and the CPU each process spent per study (from /proc: the client, the gateway, the S3 server,
Postgres with its backends, the broker), with the load average: on a shared machine the rate
measures the machine, CPU per study measures the code.

Target (from the foundation issue): the full demo in < 5 minutes on 2 cores, which leaves the
ingest of 13,735 studies about 90 s, i.e. >= 150 studies/s.
Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_ingest.py [studies]  (default 2,000: the first
studies of the paper-scale pool when it is synthesised, see bench_floor.pool_of)
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_floor import load, pool_of, stack_cpu  # this folder (run as a script)

from radcurate.demo import ingest_folder
from radcurate.stack import local

TARGET_PER_SECOND = 150.0


def main(studies: int) -> None:
    data = pool_of(studies)
    Path(".radcurate").mkdir(exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=".radcurate"))  # inside the checkout, ignored
    try:
        state = local.up(home / "stack", services_to_run=("gateway",))
        before = stack_cpu(state)
        started = time.perf_counter()
        summary = asyncio.run(ingest_folder(state, data))
        seconds = time.perf_counter() - started
        after = stack_cpu(state)
    finally:
        local.down(home / "stack")
        shutil.rmtree(home, ignore_errors=True)
    if summary.ingested != studies:
        raise SystemExit(f"ingested {summary.ingested} of {studies}: {summary.rejected[:3]}")
    rate = summary.ingested / seconds
    cpu = {k: 1000 * (after[k] - before.get(k, 0.0)) / studies for k in after}
    print(f"ingested {summary.ingested} studies in {seconds:.1f}s: {rate:.0f} studies/s "
          f"(target {TARGET_PER_SECOND:.0f}/s, ratio {rate / TARGET_PER_SECOND:.2f}) {load()}")
    print("  ms CPU per study: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
          + f"; total {sum(cpu.values()):.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
