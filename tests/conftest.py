"""Fixtures shared by the integration and end-to-end tests: the real local stack on loopback.

`infra` starts the S3 server, Postgres and the Kafka-protocol broker once per test session (no
services); `fresh_schema` gives a test its own Postgres schema with the common outbox/inbox
tables; `fresh_topic` gives it topic names nobody else uses.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
# The project's de-identification secret (services.common.deid): ingest with scrub needs one; the
# services the tests start inherit it.
os.environ.setdefault("RADCURATE_DEID_SECRET", "radcurate-tests")


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from radcurate.stack import local

    state_dir = tmp_path_factory.mktemp("infra")
    state = local.up(state_dir, services_to_run=())
    yield state
    local.down(state_dir)


def schema_dsn(admin_dsn: str, schema: str) -> str:
    from radcurate.stack.postgres import DATABASE, with_database

    info = psycopg.conninfo.conninfo_to_dict(with_database(admin_dsn, DATABASE))
    info["options"] = f"-c search_path={schema}"
    return psycopg.conninfo.make_conninfo(**info)


def new_schema(admin_dsn: str, service: str | None = None) -> str:
    """A new schema with the common outbox/inbox tables, and `service`'s own tables if named;
    returns a DSN whose search_path is it."""
    import services
    from services.common.db import COMMON_MIGRATIONS, apply_migrations, migration_files

    schema = f"t_{uuid.uuid4().hex[:10]}"
    dsn = schema_dsn(admin_dsn, schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    apply_migrations(dsn, sorted(Path(COMMON_MIGRATIONS).glob("*.sql")))
    if service is not None:
        apply_migrations(dsn, migration_files(Path(services.__file__).parent / service))
    return dsn


@pytest.fixture
def fresh_schema(infra: dict) -> str:
    """A new schema with the common outbox/inbox tables; returns a DSN whose search_path is it."""
    return new_schema(infra["postgres"]["admin_dsn"])


@pytest.fixture
def gateway_dsn(fresh_schema: str) -> str:
    """A fresh schema with the gateway's own tables too (its migrations applied)."""
    import services
    from services.common.db import apply_migrations, migration_files

    apply_migrations(fresh_schema, migration_files(Path(services.__file__).parent / "gateway"))
    return fresh_schema


@pytest.fixture
def fresh_topic() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"
