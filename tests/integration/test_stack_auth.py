"""The local stack's Postgres lets nobody in without the password: SCRAM for every connection,
the superuser's on loopback and on the Unix socket included (issue 11 §13)."""

from __future__ import annotations

import stat
from pathlib import Path

import psycopg
import pytest

from radcurate.stack import local


def _with(dsn: str, **changes: str | None) -> str:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    for key, value in changes.items():
        if value is None:
            info.pop(key, None)
        else:
            info[key] = value
    return psycopg.conninfo.make_conninfo(**info)


def _refused(dsn: str) -> str:
    with pytest.raises(psycopg.OperationalError) as refusal:
        psycopg.connect(dsn, connect_timeout=5).close()
    return str(refusal.value)


@pytest.mark.parametrize("who", ["admin", "gateway"])
def test_a_connection_without_the_password_or_with_a_wrong_one_is_refused(infra: dict, who: str) -> None:
    dsn = infra["postgres"]["admin_dsn"] if who == "admin" else infra["dsns"][who]
    with psycopg.connect(dsn, connect_timeout=5) as conn:  # the state's DSN carries the password
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert "password" in _refused(_with(dsn, password=None))
    assert "password authentication failed" in _refused(_with(dsn, password="not-the-password"))


def test_the_unix_socket_asks_for_the_password_too(infra: dict) -> None:
    socket_dir = str(Path(infra["state_dir"]) / "pg" / "data")
    dsn = _with(infra["postgres"]["admin_dsn"], host=socket_dir, password=None)
    assert "password" in _refused(dsn)
    with psycopg.connect(_with(infra["postgres"]["admin_dsn"], host=socket_dir), connect_timeout=5):
        pass


def test_passwords_are_stored_as_scram_verifiers(infra: dict) -> None:
    with psycopg.connect(infra["postgres"]["admin_dsn"]) as conn:
        stored = dict(conn.execute(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin").fetchall())
    assert set(local.SERVICES) | {"postgres"} <= set(stored)
    assert all(verifier.startswith("SCRAM-SHA-256$") for verifier in stored.values())


def test_up_again_keeps_every_services_password_so_running_services_can_still_connect(infra: dict) -> None:
    """`up` restarts what died (a crashed service, Postgres itself) while the rest keeps running
    with the DSNs it was started with: it must not change their passwords."""
    again = local.up(Path(infra["state_dir"]), services_to_run=())
    assert again["dsns"] == infra["dsns"]
    for svc in local.SERVICES:
        with psycopg.connect(infra["dsns"][svc], connect_timeout=5) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (svc,)


def test_the_state_file_is_its_owners_alone(infra: dict) -> None:
    mode = stat.S_IMODE(local.stack_file(Path(infra["state_dir"])).stat().st_mode)
    assert mode == 0o600
