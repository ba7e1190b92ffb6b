"""The types every repository module shares: the connection the pool hands out, and its rows."""

from __future__ import annotations

from typing import Any, TypeAlias

import psycopg
from psycopg.rows import DictRow

# The pool's connections return rows as dicts (services/common/db.py: `dict_row`).
Conn: TypeAlias = psycopg.AsyncConnection[DictRow]
Row: TypeAlias = dict[str, Any]
