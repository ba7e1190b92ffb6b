"""Issue 15: the consensus service runs numpy's OpenBLAS on one thread (services/consensus/__init__.py:
its matrices are small, and on a shared 2-core machine two BLAS threads cost ~7x the CPU and ~10x
the wall time of one), unless the operator set OPENBLAS_NUM_THREADS. Fresh interpreters: OpenBLAS
reads the variable once, when numpy loads."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import os
import services.consensus  # as the service starts: its package first
import numpy
print(os.environ.get("OPENBLAS_NUM_THREADS"))
try:
    import threadpoolctl
except ImportError:
    print("-")
else:
    print(*[i["num_threads"] for i in threadpoolctl.threadpool_info() if i["internal_api"] == "openblas"])
"""


def run(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env={**clean, **env}, capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.split()


def test_consensus_loads_openblas_on_one_thread() -> None:
    setting, threads = run()
    assert setting == "1" and threads in ("1", "-")


def test_an_operators_setting_is_kept() -> None:
    assert run(OPENBLAS_NUM_THREADS="2")[0] == "2"
