"""A throwaway embedded Postgres with one service's schema, for the benches that measure that
service's SQL alone, nothing else running (imported by bench files run as scripts, from this folder)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import services
from radcurate.stack import postgres
from radcurate.stack.procs import stop
from services.common.db import apply_migrations, migration_files


@contextlib.contextmanager
def service_postgres(service: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(its admin DSN, its process entry as `postgres.start` gives it: `pid` for /proc CPU clocks)
    with `service`'s migrations applied (the common ones first); stopped and removed after."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{service}-pg-") as tmp:
        state = postgres.start(Path(tmp) / "pg" / "data", Path(tmp) / "pg.log")
        try:
            apply_migrations(state["admin_dsn"], migration_files(Path(services.__file__).parent / service))
            yield state["admin_dsn"], state
        finally:
            stop(state, timeout=20)
