"""Issue 11 item 16: a gateway restart keeps the bootstrap admin's token current but never
re-activates an admin an operator switched off."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from pydantic import SecretStr

import services
from services.common.db import apply_migrations, open_pool
from services.gateway.app import _bootstrap_admin
from services.gateway.auth import token_hash

pytestmark = pytest.mark.integration


async def test_a_restart_rotates_the_admin_token_but_does_not_reactivate_the_admin(fresh_schema):
    apply_migrations(fresh_schema, sorted((Path(services.__file__).parent / "gateway" / "migrations").glob("*.sql")))
    pool = await open_pool(fresh_schema)
    try:
        first = SimpleNamespace(settings=SimpleNamespace(admin_token=SecretStr("rc_first")), pool=pool)
        await _bootstrap_admin(first)
        with psycopg.connect(fresh_schema, autocommit=True) as conn:
            conn.execute("UPDATE users SET active = false WHERE user_id = 'admin'")  # an operator's decision
        await _bootstrap_admin(SimpleNamespace(settings=SimpleNamespace(admin_token=SecretStr("rc_second")), pool=pool))
        with psycopg.connect(fresh_schema) as conn:
            active, digest = conn.execute("SELECT active, token_sha256 FROM users WHERE user_id = 'admin'").fetchone()
    finally:
        await pool.close()
    assert active is False
    assert digest == token_hash("rc_second")
