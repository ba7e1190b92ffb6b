"""Gauges read from the consensus tables: studies per curation state, agreement per label (the
protocols that have one, e.g. Fleiss' kappa per CXR label).

Refreshed on a timer rather than on every vote: kappa is a statistic over all decided studies,
and recomputing it inside each vote's transaction would make voting slower as the panel grows.
Each tick first reads the tables' row counts (`repo.gauge_fingerprint`: a few index-only counts)
and recomputes only what they say changed: an idle consensus recomputes nothing, where it used to
read and score every decided study every tick (45-55 ms of CPU per second at the load bench's
size, growing with the data). The counts come from the tables themselves, not from pg_stat's
counters, which lag the commits they count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from psycopg_pool import AsyncConnectionPool

from services.common import metrics, protocols
from services.common.protocols import CurationProtocol
from services.consensus import repo

log = logging.getLogger(__name__)


def _has_kappas(plugin: CurationProtocol) -> bool:
    """Whether the protocol reports per-label agreement (the base class's label_kappas reports none)."""
    return type(plugin).label_kappas is not CurationProtocol.label_kappas


async def refresh(pool: AsyncConnectionPool, last: dict[str, int] | None = None) -> dict[str, int]:
    """Set `radcurate_studies{state}` and `radcurate_fleiss_kappa{label}` from the tables, as far as
    they changed since the refresh that returned `last` (None: all of it). Returns the tables'
    fingerprint, to pass to the next refresh."""
    async with pool.connection() as conn:
        now = await repo.gauge_fingerprint(conn)
        states = await repo.study_states(conn) if now != last else None
        # Kappa's inputs, the decided studies with their effective labels and counted votes, change
        # only with a decision or an adjudication: a vote is counted only while its study is open.
        decided = last is None or (now["decisions"], now["adjudications"]) != (last["decisions"],
                                                                               last["adjudications"])
        rows = {name: await repo.kappa_rows(conn, name) for name in protocols.names()
                if decided and _has_kappas(protocols.get(name))}
        await conn.rollback()
    for state, n in (states or {}).items():
        metrics.STUDIES.labels(state).set(n)
    for name, (studies, votes) in rows.items():
        # label ids do not collide across protocols' taxonomies
        kappas = await asyncio.to_thread(protocols.get(name).label_kappas, studies, votes)
        for label, kappa in kappas.items():
            metrics.FLEISS_KAPPA.labels(label).set(float("nan") if kappa is None else kappa)
    return now


async def refresh_forever(pool: AsyncConnectionPool, seconds: float) -> None:
    """Refresh the gauges every `seconds`, each time only as far as the tables changed."""
    last: dict[str, int] | None = None
    while True:
        try:
            last = await refresh(pool, last)
        except Exception:  # noqa: BLE001 - a gauge refresh must never stop the service
            last = None  # recompute everything next time: this one may have stopped half-way
            with contextlib.suppress(Exception):
                log.warning("gauge refresh failed", exc_info=True)
        await asyncio.sleep(seconds)
