"""Ingest from a real PACS: pacs_scenario.py run inside a network namespace of its own.

Orthanc 1.10 listens on every interface, so the scenario — Orthanc, the local stack with the
gateway, and `radcurate ingest --dicomweb` — runs in `unshare -n` with only loopback up; nothing
in it can be reached from outside, and it reaches nothing outside.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.orthanc import missing_prerequisites

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]
SCENARIO = Path(__file__).with_name("pacs_scenario.py")
REPO = SCENARIO.parents[2]


def namespace_unavailable() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is not installed (util-linux, iproute2)"
    probe = subprocess.run(["unshare", "-n", "--", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a network namespace here (unshare -n needs root or CAP_SYS_ADMIN): {probe.stderr.strip()}"
    return None


def test_radcurate_ingests_from_orthanc_inside_its_own_network_namespace():
    reason = missing_prerequisites() or namespace_unavailable()
    if reason:
        pytest.skip(reason)
    script = 'ip link set lo up && exec "$0" -m pytest "$1" -q -p no:cacheprovider -x -rA'
    run = subprocess.run(["unshare", "-n", "--", "sh", "-c", script, sys.executable, str(SCENARIO)],
                         capture_output=True, text=True, timeout=450, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-8000:]
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) == 6 and " skipped" not in output, output[-4000:]
