"""The gateway loads every curation protocol while it starts (services/gateway/app.py
`load_protocols`, from its start hook), not on the first reader's request: `protocols.get`
imports a protocol on first use and its review view loads the taxonomy on first call, ~90 ms of
CPU that the process's first `GET /reviews/next` paid while every request arriving meanwhile
waited. Checked in a fresh interpreter (the test process has long imported them), running the
gateway's real start hook against the gateway's tables in the test Postgres."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from pydantic import SecretStr
    from services.common import protocols
    from services.common.db import open_pool
    from services.common.runtime import Resources
    from services.common.taxonomy import _load_cached
    from services.gateway import app

    lazy = [m for m in protocols.BUILTIN.values() if m in sys.modules]
    assert lazy == [], f"imported before the start: {lazy}"
    assert _load_cached.cache_info().currsize == 0

    async def start() -> None:
        settings = app.GatewaySettings(database_url=SecretStr(sys.argv[1]), derivative_workers=0)
        pool = await open_pool(sys.argv[1])
        try:
            await app._start(Resources(settings, pool, None, None, None))
        finally:
            await pool.close()

    asyncio.run(start())
    missing = [m for m in protocols.BUILTIN.values() if m not in sys.modules]
    assert missing == [], f"not imported by the start: {missing}"
    assert _load_cached.cache_info().currsize >= 1  # the CXR taxonomy the review view lists
    print("loaded", sorted(protocols.BUILTIN))
""")


def test_the_start_hook_loads_every_protocol_before_the_first_read(gateway_dsn):
    done = subprocess.run([sys.executable, "-c", SCRIPT, gateway_dsn], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded ['cxr-label-verification', 'lumbar-grading']" in done.stdout
