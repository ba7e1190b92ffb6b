"""The types every repository module shares: the connection the pool hands out, and its rows."""

from __future__ import annotations

from typing import Any, TypeAlias

import psycopg
from psycopg.rows import DictRow

# The pool's connection in autocommit mode for a block (services/common/db.py: the relay's empty
# poll uses it too); re-exported, as the repository modules import it from here.
from services.common.db import autocommit

__all__ = ["Conn", "Cursor", "Row", "autocommit"]

# The pool's connections return rows as dicts (services/common/db.py: `dict_row`).
Conn: TypeAlias = psycopg.AsyncConnection[DictRow]
Row: TypeAlias = dict[str, Any]
Cursor: TypeAlias = psycopg.AsyncCursor[DictRow]
