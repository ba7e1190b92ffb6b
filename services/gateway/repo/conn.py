"""The types every repository module shares: the connection the pool hands out, and its rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow

# The pool's connections return rows as dicts (services/common/db.py: `dict_row`).
Conn: TypeAlias = psycopg.AsyncConnection[DictRow]
Row: TypeAlias = dict[str, Any]
Cursor: TypeAlias = psycopg.AsyncCursor[DictRow]


@asynccontextmanager
async def autocommit(conn: Conn) -> AsyncIterator[None]:
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
