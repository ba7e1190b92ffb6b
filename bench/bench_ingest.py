"""Ingest throughput: synthetic CXR studies into the local stack's Postgres and S3 server.

Target (from the foundation issue): the full demo in < 5 minutes on 2 cores, which leaves the
ingest of 13,735 studies about 90 s, i.e. >= 150 studies/s.
Run: .venv/bin/python bench/bench_ingest.py [studies]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from radcurate.demo import ingest_folder
from radcurate.stack import local
from radcurate.synth import synth_cxr

TARGET_PER_SECOND = 150.0


def main(studies: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        synth_cxr(studies, 0, data)
        state = local.up(Path(tmp) / "stack", services_to_run=())
        try:
            started = time.perf_counter()
            summary = asyncio.run(ingest_folder(state, data))
            seconds = time.perf_counter() - started
        finally:
            local.down(Path(tmp) / "stack")
    rate = summary.ingested / seconds
    print(f"ingested {summary.ingested} studies in {seconds:.1f}s: {rate:.0f} studies/s "
          f"(target {TARGET_PER_SECOND:.0f}/s, ratio {rate / TARGET_PER_SECOND:.2f})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
