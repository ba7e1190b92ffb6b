"""Gauges read from the consensus tables: studies per curation state, Fleiss' kappa per label.

Refreshed on a timer rather than on every vote: kappa is a statistic over all decided studies,
and recomputing it inside each vote's transaction would make voting slower as the panel grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from psycopg_pool import AsyncConnectionPool

from services.common import metrics
from services.common.taxonomy import load_taxonomy
from services.consensus import repo
from services.common.protocols.cxr.reporting import kappa_per_label, reader_label_sets

log = logging.getLogger(__name__)


async def refresh(pool: AsyncConnectionPool, protocol: str) -> None:
    """Set `radcurate_studies{state}` and `radcurate_fleiss_kappa{label}` from the tables."""
    async with pool.connection() as conn:
        states = await repo.study_states(conn)
        studies, votes = await repo.report_rows(conn, protocol)
        await conn.rollback()
    for state, n in states.items():
        metrics.STUDIES.labels(state).set(n)
    label_ids = load_taxonomy("cxr").label_ids
    kappas = await asyncio.to_thread(lambda: kappa_per_label(reader_label_sets(studies, votes), label_ids))
    for label, kappa in kappas.items():
        metrics.FLEISS_KAPPA.labels(label).set(float("nan") if kappa is None else kappa)


async def refresh_forever(pool: AsyncConnectionPool, protocol: str, seconds: float) -> None:
    while True:
        try:
            await refresh(pool, protocol)
        except Exception:  # noqa: BLE001 - a gauge refresh must never stop the service
            with contextlib.suppress(Exception):
                log.warning("gauge refresh failed", exc_info=True)
        await asyncio.sleep(seconds)
