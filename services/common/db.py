"""Postgres access: a connection pool per service, a unit of work, and the migrations runner.

Each service owns one schema; its role's `search_path` points there, so SQL in the repository
modules is written without schema prefixes. Migrations are ordered `NNN_name.sql` files applied
by an explicit step (`radcurate migrate <service>`), never at import or service start.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

COMMON_MIGRATIONS = Path(__file__).parent / "migrations"


async def open_pool(dsn: str, *, min_size: int = 1, max_size: int = 8) -> AsyncConnectionPool:
    """Open a pool whose connections return rows as dicts and commit durably (`_durable`)."""
    pool = AsyncConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "autocommit": False},
        configure=_durable,
        open=False,
    )
    await pool.open(wait=True, timeout=30)
    return pool


async def _durable(conn: psycopg.AsyncConnection) -> None:
    """Every service transaction commits synchronously, whatever the server's default.

    A commit that returned is then in the WAL that Postgres has handed to the OS (with `fsync=off`,
    as on the local stack: it survives any process kill) or on disk (production's `fsync=on`).
    With `synchronous_commit = off` a COMMIT returns — and its rows become visible to other
    sessions — up to 3 × `wal_writer_delay` before its WAL leaves Postgres's memory, so a SIGKILL
    of Postgres loses it after the outside has acted on it: a 201 already sent, an outbox row
    already relayed to the broker, a Kafka offset already committed past the consumed records.
    """
    await conn.execute("SET synchronous_commit = on")
    await conn.commit()


@asynccontextmanager
async def unit_of_work(pool: AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection]:
    """A transaction that commits only if the block finishes; any exception rolls it back.

    A block that finishes on a connection that broke inside it (an error caught in the block)
    raises `TransactionNotCommitted`: psycopg itself ends such a block silently, committing nothing,
    and the caller would answer as if its writes were stored."""
    async with pool.connection() as conn:
        async with conn.transaction() as tx:
            yield conn
        if tx.status is tx.Status.FAILED:
            raise TransactionNotCommitted("the transaction did not commit: its connection broke")


class TransactionNotCommitted(psycopg.OperationalError):
    """A transaction block ended without committing because its connection had broken."""


@asynccontextmanager
async def autocommit(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """The pool's connection in autocommit mode for the block (a client-side switch: no round
    trip), handed back as the pool gave it: not in a transaction, autocommit off.

    With autocommit off, psycopg sends BEGIN and waits for it before a block's first statement,
    and the pool's block ends with a COMMIT: a lone read costs three round trips instead of one."""
    await conn.set_autocommit(True)
    try:
        yield
    finally:
        if conn.info.transaction_status != TransactionStatus.IDLE and not conn.closed:
            await conn.execute("ROLLBACK")  # a statement failed inside the block's own BEGIN (e.g. a duplicate vote)
        await conn.set_autocommit(False)


def migration_files(service_dir: Path) -> list[Path]:
    """The common outbox/inbox migrations first, then the service's own, in name order."""
    own = sorted((service_dir / "migrations").glob("*.sql"))
    return sorted(COMMON_MIGRATIONS.glob("*.sql")) + own


def apply_migrations(dsn: str, files: list[Path]) -> list[str]:
    """Apply files not yet recorded in `schema_migrations`; returns the names applied.

    Each file runs in its own transaction together with its bookkeeping row, so a failed
    migration leaves no half-applied state and the next run retries it.
    """
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=False) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.commit()
        done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
        for path in files:
            name = f"{path.parent.parent.name}/{path.name}"
            if name in done:
                continue
            with conn.transaction():
                conn.execute(path.read_text())
                conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
            log.info("applied migration %s", name)
            applied.append(name)
    return applied
