"""Gauges read from the consensus tables: studies per curation state, agreement per label (the
protocols that have one, e.g. Fleiss' kappa per CXR label).

Refreshed on a timer rather than on every vote: kappa is a statistic over all decided studies,
and recomputing it inside each vote's transaction would make voting slower as the panel grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from psycopg_pool import AsyncConnectionPool

from services.common import metrics, protocols
from services.consensus import repo

log = logging.getLogger(__name__)


async def refresh(pool: AsyncConnectionPool, protocol: str) -> None:
    """Set `radcurate_studies{state}` and `radcurate_fleiss_kappa{label}` from the tables."""
    plugin = protocols.get(protocol)
    async with pool.connection() as conn:
        states = await repo.study_states(conn)
        studies, votes = await repo.report_rows(conn, protocol)
        await conn.rollback()
    for state, n in states.items():
        metrics.STUDIES.labels(state).set(n)
    kappas = await asyncio.to_thread(plugin.label_kappas, studies, votes)
    for label, kappa in kappas.items():
        metrics.FLEISS_KAPPA.labels(label).set(float("nan") if kappa is None else kappa)


async def refresh_forever(pool: AsyncConnectionPool, seconds: float) -> None:
    """Refresh every protocol's gauges (label ids do not collide across protocols' taxonomies)."""
    while True:
        try:
            for protocol in protocols.names():
                await refresh(pool, protocol)
        except Exception:  # noqa: BLE001 - a gauge refresh must never stop the service
            with contextlib.suppress(Exception):
                log.warning("gauge refresh failed", exc_info=True)
        await asyncio.sleep(seconds)
