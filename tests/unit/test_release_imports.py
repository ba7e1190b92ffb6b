"""Issue 15: what a release first uses (pydicom for the checks and the dataset card, numpy.ma for
the report's first percentile interval, numpy.random for the selection's tie-breaks) is imported
in the background at the first decision (services/consensus/release_ahead.py), not on the chain
from the last vote to the release. A fresh interpreter, since this test process has imported them
long before."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from services.consensus.release_ahead import ReleaseAhead

async def never(conn, protocol):
    raise AssertionError("not computed here")

ahead = ReleaseAhead(None, "", never)
MODULES = ("pydicom", "numpy.ma", "numpy.random")
before = {m: m in sys.modules for m in MODULES}
ahead.note("S1", "cxr-label-verification", accepted=True)
ahead._importing.join(60)
print(before, {m: m in sys.modules for m in MODULES})
"""


def test_the_first_decision_imports_what_a_release_first_uses_in_the_background() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    before, after = out.stdout.strip().split("} {")
    assert before == "{'pydicom': False, 'numpy.ma': False, 'numpy.random': False"
    assert after == "'pydicom': True, 'numpy.ma': True, 'numpy.random': True}"
