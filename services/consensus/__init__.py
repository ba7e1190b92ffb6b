"""The consensus service.

Set before numpy is first imported (this package's modules import it; OpenBLAS reads the variable
once, when it loads): consensus multiplies small matrices (the agreement report's and an
evaluation's bootstrap: ~1,000 replicates x ~1,000 studies), where OpenBLAS's own threads, one
per core, only wait on each other on a machine the stack's processes share. Measured on the
2-core machine at load 14-18: a 1,000 x 1,000 by 1,000 x 2 product 0.57 ms of CPU and 3.7 ms wall
on one thread, 4.0 ms of CPU and 38 ms wall on two; the agreement report of 1,000 studies 0.20-0.29
against 0.40-0.44 s of CPU. An operator's own setting wins.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
